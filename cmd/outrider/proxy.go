package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/outrider-dev/outrider/certs"
	"github.com/outrider-dev/outrider/configsync"
	"github.com/outrider-dev/outrider/internal/admin"
	"github.com/outrider-dev/outrider/proxy"
)

func runProxy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return proxyMain(ctx, args, stdout, stderr, nil)
}

// proxyMain is `outrider proxy`. onListening, if not nil, is called with
// the bound HTTPS and admin addresses once every listener is open (the
// demo prints its instructions only then).
func proxyMain(ctx context.Context, args []string, stdout, stderr io.Writer, onListening func(httpsAddr, adminAddr string)) error {
	fs := newFlagSet("outrider proxy", "HTTPS-terminating reverse proxy in front of a localhost-only app.\n"+
		"Certificates come from exactly one source: ACME (--domain), static files (--cert/--key)\n"+
		"or the internal CA (--tls-internal, the default when neither is given).")
	listen := fs.String("listen", ":443", "HTTPS `address` (HTTP/1.1 and HTTP/2 over TCP; HTTP/3 over UDP, see --http3)")
	http3 := fs.Bool("http3", true, "also serve HTTP/3 (QUIC) on --listen's address over UDP, announced with Alt-Svc")
	httpListen := fs.String("http-listen", ":80", "plain-HTTP `address`: ACME HTTP-01 and 308 redirects to HTTPS; empty turns it off")
	adminListen := fs.String("admin-listen", "127.0.0.1:9901", "`address` for /metrics, /healthz, /readyz, /status; empty turns it off")
	upstream := fs.String("upstream", "", "the app: http://127.0.0.1:8080 or unix:///run/app.sock (required)")
	allowRemote := fs.Bool("allow-remote-upstream", false, "allow an upstream host that is not loopback (its traffic is plain HTTP)")
	trustedProxies := newListFlag(fs, "trusted-proxies", "`CIDR` whose X-Forwarded-*/Forwarded headers are kept")
	proxyProtocolFrom := newListFlag(fs, "proxy-protocol-from", "`CIDR` of load balancers that may send PROXY protocol v1/v2 (optional from them, refused from anyone else)")
	upstreamTimeout := durationFlag(fs, "upstream-timeout", 60*time.Second, "longest wait for the upstream's response headers (and for a free connection to it) before answering 504")
	upstreamWait := durationFlag(fs, "upstream-wait", 10*time.Second, "a request whose connection the app refuses (restarting) waits this long for it to listen again, then 502; 0 turns it off")
	maxUpstreamConns := fs.Int("max-upstream-conns", proxy.DefaultMaxUpstreamConns, "most connections to the app at once; requests beyond wait for a free one within --upstream-timeout")
	clientCA := fs.String("client-ca", "", "PEM `file` of CAs whose client certificates are accepted (reloaded when it changes); turns client certificates on")
	clientAuth := fs.String("client-auth", proxy.ClientAuthRequire, "with --client-ca: require (every client) or optional (checked when presented)")
	allowClient := newListFlag(fs, "allow-client", "`rule` a client certificate must match one of: cn=NAME, dns=NAME, ou=UNIT, uri=URI (trailing * for a prefix)")
	clientCRL := fs.String("client-crl", "", "CRL `file` (PEM or DER) for --client-ca certificates; reloaded when it changes")
	authURL := fs.String("auth-url", "", "forward-auth service `URL` asked about every request first (nginx auth_request): 2xx admits, 401/403/3xx go back to the client, else 503")
	authCopy := newListFlag(fs, "auth-copy-headers", "`header` copied from the auth service's 2xx answer to the app (the client's own under that name removed), e.g. X-User,X-Email")
	bufferRequests := sizeVar(fs, "buffer-requests", 0, "read request bodies up to this size whole before the app sees them (slow uploads do not hold its workers); 0: stream")
	bufferMemory := sizeVar(fs, "buffer-memory", 1<<20, "of a --buffer-requests body, how much is held in memory; the rest spills to a file in $TMPDIR")
	compress := newListFlag(fs, "compress", "`encodings` for compressible responses the app left uncompressed: gzip, zstd (ties go to the first)")
	compressSecrets := fs.Bool("compress-secrets", false, "with --compress: also compress responses that set cookies or answer authenticated requests (BREACH guard off)")
	maxInflight := fs.Int("max-inflight", 0, "most requests at the app at once; the rest queue for --queue-timeout, then 503; 0: no cap")
	queueTimeout := durationFlag(fs, "queue-timeout", 10*time.Second, "longest wait for a --max-inflight slot before 503 with Retry-After")
	rateLimit := fs.String("rate-limit", "", "requests per client address, `RATE` such as 100/s or 600/m; over it 429 with Retry-After; empty: off")
	rateBurst := fs.Int("rate-burst", 0, "requests a client may make at once before --rate-limit applies; 0: the RATE's number")
	keepUnderscore := fs.Bool("keep-underscore-headers", false, "forward request header names that contain _ (dropped by default: CGI, PHP and WSGI read X_Real_IP as X-Real-IP)")
	maxConns := fs.Int("max-conns", 0, "most client connections at once; at the cap the longest-idle keep-alive one is closed for a new one; 0 derives it from RLIMIT_NOFILE")
	tlsMin := fs.String("tls-min-version", "1.2", "lowest TLS `version` accepted: 1.2 (Mozilla intermediate) or 1.3 (modern)")
	errorPages := fs.String("error-pages", "", "`directory` with 502.html, 503.html, 504.html served instead of the bare status text")
	idleTimeout := durationFlag(fs, "idle-timeout", 5*time.Minute, "close a connection, body, WebSocket or stream silent this long in both directions")
	headerTimeout := durationFlag(fs, "header-timeout", 10*time.Second, "longest time a client may take to send a request's headers (slowloris)")
	maxBody := fs.Int64("max-body-bytes", 0, "largest request body in `bytes` passed to the app (413 beyond it); 0 means unlimited")
	hsts := secondsVar(fs, "hsts", 0, "31536000 is one year", "Strict-Transport-Security max-age in seconds; 0 turns it off")
	shutdownTimeout := durationFlag(fs, "shutdown-timeout", 30*time.Second, "how long SIGTERM/SIGINT waits for in-flight requests")
	rewrites := newListFlag(fs, "legacy-rewrites", "legacy-app fixes: location (Location/Refresh to https), cookie (Set-Cookie Secure), destination (WebDAV); empty turns all off",
		"location", "cookie", "destination")
	accessLogOn := fs.Bool("access-log", true, "log one line per request")
	pprof := fs.Bool("pprof", false, "serve /debug/pprof/ on the admin listener")
	withTop := fs.Bool("top", false, "serve /top (processes and resources) on the admin listener; see 'outrider top -h'")
	topTokenFile := fs.String("top-token-file", "", "`file` holding the bearer token every /top request needs (re-read on SIGHUP)")
	sandbox := fs.Bool("landlock", false, "restrict file access to --storage, the --cert/--key directories and the other paths given (Linux ≥ 5.13, best effort)")
	topPublic := fs.Bool("top-public", false, "also answer /top on the HTTPS listener instead of passing it to the app (needs --top-token-file)")
	cf := addCertFlags(fs)
	csf := addConfigsyncFlags(fs, "configsync-")
	lf := addLogFlags(fs)
	log, err := lf.parse(fs, args, stdout, stderr)
	if err != nil {
		return err
	}
	tlsMinVersion, err := proxy.ParseTLSVersion(*tlsMin)
	if err != nil {
		return usageError{err}
	}
	if *maxConns < 0 {
		return usageError{fmt.Errorf("--max-conns %d: must not be negative (0 derives it from the file limit)", *maxConns)}
	}
	if *maxUpstreamConns < 1 {
		return usageError{fmt.Errorf("--max-upstream-conns %d: must be at least 1", *maxUpstreamConns)}
	}
	// Check the upstream before anything logs or touches storage.
	if _, err := proxy.ParseUpstream(*upstream, *allowRemote); err != nil {
		return usageError{err}
	}
	rw, err := proxy.ParseRewrites(rewrites.values)
	if err != nil {
		return usageError{fmt.Errorf("invalid value for flag --legacy-rewrites: %w", err)}
	}
	trusted, err := proxy.ParsePrefixes(trustedProxies.values)
	if err != nil {
		return usageError{fmt.Errorf("invalid value for flag --trusted-proxies: %w", err)}
	}
	if fs.isSet("buffer-memory") && *bufferRequests == 0 {
		return usageError{errors.New("--buffer-memory needs --buffer-requests")}
	}
	encodings, err := proxy.ParseCompress(compress.values)
	if err != nil {
		return usageError{err}
	}
	limits, err := limitFlags(fs, *maxInflight, *queueTimeout, *rateLimit, *rateBurst)
	if err != nil {
		return usageError{err}
	}
	ppFrom, err := proxy.ParsePrefixes(proxyProtocolFrom.values)
	if err != nil {
		return usageError{fmt.Errorf("invalid value for flag --proxy-protocol-from: %w", err)}
	}

	shieldCfg := proxy.Config{
		ClientCAFile: *clientCA, ClientAuth: flagIfSet(fs, "client-auth", *clientAuth), AllowClients: allowClient.values, ClientCRLFile: *clientCRL,
		AuthURL: *authURL, AuthCopyHeaders: authCopy.values,
		BufferRequests: *bufferRequests, BufferMemory: *bufferMemory,
		Compress: encodings, CompressSecrets: *compressSecrets,
		MaxInflight: limits.MaxInflight, QueueTimeout: limits.QueueTimeout, RateLimit: limits.RateLimit, RateBurst: limits.RateBurst,
	}
	// Before anything touches storage: a bad --client-ca is a usage error.
	if err := proxy.CheckShield(shieldCfg); err != nil {
		return usageError{err}
	}

	reg := newRegistry()
	// --configsync-*: the configsync loop in-process, beside the proxy.
	csCfg, csOn, err := csf.config(log.With("component", "configsync"), reg)
	if err != nil {
		return err
	}
	var syncer *configsync.Syncer
	if csOn {
		if syncer, err = configsync.New(csCfg); err != nil {
			return usageError{err}
		}
	}
	certCfg := cf.config(log.With("component", "certs"), reg)
	if err := checkStorage(certCfg); err != nil {
		return err
	}
	certMgr, err := certs.New(certCfg)
	if err != nil {
		return usageError{err}
	}
	var top *proxyTop
	var mounts map[string]http.Handler
	if *topPublic && (!*withTop || *topTokenFile == "") {
		return usageError{errors.New("--top-public needs --top and --top-token-file: /top on the public listener is never served without a token")}
	}
	var sandboxed sandboxPaths
	if *sandbox {
		if sandboxed, err = proxySandbox(cf, csf, *topTokenFile, *withTop); err != nil {
			return usageError{err}
		}
		sandboxed.addWatchedFiles(*clientCA, *clientCRL)
	}
	if *withTop {
		if top, err = newProxyTop(log, *topTokenFile); err != nil {
			return err
		}
		if *topPublic {
			mounts = map[string]http.Handler{"/top": top.handler}
		}
	}
	var accessLog *proxy.AccessLog
	if *accessLogOn {
		buf := newLineBuffer(stderr)
		defer buf.Flush()
		accessLog = &proxy.AccessLog{W: buf, JSON: lf.json(stderr)}
	}
	srv, err := proxy.New(proxy.Config{
		Listen:                      *listen,
		HTTP3:                       *http3,
		HTTPListen:                  *httpListen,
		Upstream:                    *upstream,
		AllowRemoteUpstream:         *allowRemote,
		GetCertificate:              certMgr.GetCertificate,
		GetEncryptedClientHelloKeys: certMgr.ECHKeys(),
		NextProtos:                  certMgr.NextProtos(),
		WrapHTTP:                    certMgr.HTTPHandler,
		Names:                       certMgr.Names(),
		TrustedProxies:              trusted,
		ProxyProtocolFrom:           ppFrom,
		ClientCAFile:                *clientCA,
		ClientAuth:                  flagIfSet(fs, "client-auth", *clientAuth),
		AllowClients:                allowClient.values,
		ClientCRLFile:               *clientCRL,
		AuthURL:                     *authURL,
		AuthCopyHeaders:             authCopy.values,
		BufferRequests:              *bufferRequests,
		BufferMemory:                *bufferMemory,
		Compress:                    encodings,
		CompressSecrets:             *compressSecrets,
		UpstreamTimeout:             *upstreamTimeout,
		UpstreamWait:                *upstreamWait,
		MaxUpstreamConns:            *maxUpstreamConns,
		MaxConns:                    *maxConns,
		TLSMinVersion:               tlsMinVersion,
		KeepUnderscoreHeaders:       *keepUnderscore,
		ErrorPages:                  *errorPages,
		IdleTimeout:                 *idleTimeout,
		ReadHeaderTimeout:           *headerTimeout,
		MaxBodyBytes:                *maxBody,
		MaxInflight:                 limits.MaxInflight,
		QueueTimeout:                limits.QueueTimeout,
		RateLimit:                   limits.RateLimit,
		RateBurst:                   limits.RateBurst,
		ShutdownTimeout:             *shutdownTimeout,
		HSTS:                        time.Duration(*hsts) * time.Second,
		Rewrites:                    rw,
		Mounts:                      mounts,
		AccessLog:                   accessLog,
		Logger:                      log.With("component", "proxy"),
		Registerer:                  reg,
	})
	if err != nil {
		return usageError{err}
	}
	adm := admin.New(admin.Config{
		Addr:     *adminListen,
		Gatherer: reg,
		Pprof:    *pprof,
		Logger:   log.With("component", "admin"),
		Checks: []admin.Check{
			{Name: "certificate", Func: certificateCheck(certMgr, !certCfg.DisableHTTPChallenge || !certCfg.DisableTLSALPNChallenge)},
			{Name: "upstream", Func: srv.CheckUpstream},
		},
	})
	status := map[string]func() any{
		"certificates": func() any { return certMgr.Status() },
	}
	if syncer != nil {
		status["configsync"] = func() any { return syncer.Status() }
	}
	adm.Handle("GET /status", statusHandler(status))
	drain := newDrainer()
	adm.Handle("GET /drain", drain)
	adm.Handle("POST /drain", drain)
	if *cf.ech != "" {
		adm.Handle("GET /ech", echHandler(certMgr.ECHConfigList))
	}

	services := []service{
		{name: "certs", run: certMgr.Run, reload: certMgr.Reload},
		{name: "proxy", run: srv.Serve, reload: srv.Reload},
	}
	if top != nil {
		services = append(services, top.mount(adm))
	}

	if syncer != nil {
		services = append(services, service{name: "configsync", run: syncer.Run, reload: syncer.Reload})
	}

	if err := srv.Listen(); err != nil {
		return listenAdvice(err, "--listen or --http-listen (or turn HTTP/3 off with --http3=false)")
	}
	if err := adm.Listen(); err != nil {
		return listenAdvice(err, "--admin-listen")
	}
	if *sandbox {
		if err := restrictFiles(log, sandboxed); err != nil {
			return err
		}
	}
	// "listening", not "ready": /readyz decides readiness, and its changes
	// are logged as they happen.
	log.Info("listening", "https_addr", srv.Addr(), "http3_addr", srv.HTTP3Addr(), "http_addr", srv.HTTPAddr(), "admin_addr", adm.Addr(), "upstream", *upstream, "max_conns", srv.MaxConns())
	if onListening != nil {
		onListening(srv.Addr(), adm.Addr())
	}
	err = serveDrainable(ctx, log, adm, drain, services...)
	if err == nil {
		log.Info("stopped")
	}
	return err
}
