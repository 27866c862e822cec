package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/outrider-dev/outrider/certs"
	"github.com/outrider-dev/outrider/configsync"
	"github.com/outrider-dev/outrider/internal/admin"
	"github.com/outrider-dev/outrider/proxy"
)

func runProxy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("outrider proxy", "HTTPS-terminating reverse proxy in front of a localhost-only app.\n"+
		"Certificates come from exactly one source: ACME (--domain), static files (--cert/--key)\n"+
		"or the internal CA (--tls-internal, the default when neither is given).")
	listen := fs.String("listen", ":443", "HTTPS `address` (HTTP/1.1 and HTTP/2)")
	httpListen := fs.String("http-listen", ":80", "plain-HTTP `address`: ACME HTTP-01 and 308 redirects to HTTPS; empty turns it off")
	adminListen := fs.String("admin-listen", "127.0.0.1:9901", "`address` for /metrics, /healthz, /readyz, /status; empty turns it off")
	upstream := fs.String("upstream", "", "the app: http://127.0.0.1:8080 or unix:///run/app.sock (required)")
	allowRemote := fs.Bool("allow-remote-upstream", false, "allow an upstream host that is not loopback (its traffic is plain HTTP)")
	trustedProxies := newListFlag(fs, "trusted-proxies", "`CIDR` whose X-Forwarded-*/Forwarded headers are kept")
	upstreamTimeout := durationFlag(fs, "upstream-timeout", 60*time.Second, "longest wait for the upstream's response headers before answering 504")
	idleTimeout := durationFlag(fs, "idle-timeout", 5*time.Minute, "close a connection, body, WebSocket or stream silent this long in both directions")
	headerTimeout := durationFlag(fs, "header-timeout", 10*time.Second, "longest time a client may take to send a request's headers (slowloris)")
	maxBody := fs.Int64("max-body-bytes", 0, "largest request body in `bytes` passed to the app (413 beyond it); 0 means unlimited")
	hsts := fs.Int("hsts", 0, "Strict-Transport-Security max-age in `seconds`; 0 turns it off")
	shutdownTimeout := durationFlag(fs, "shutdown-timeout", 30*time.Second, "how long SIGTERM/SIGINT waits for in-flight requests")
	rewrites := newListFlag(fs, "legacy-rewrites", "legacy-app fixes: location (Location/Refresh to https), cookie (Set-Cookie Secure), destination (WebDAV); empty turns all off",
		"location", "cookie", "destination")
	accessLog := fs.Bool("access-log", true, "log one line per request")
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
	if *hsts < 0 {
		return usageError{fmt.Errorf("invalid value %d for flag --hsts: must not be negative", *hsts)}
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
	certMgr, err := certs.New(cf.config(log.With("component", "certs"), reg))
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
	}
	if *withTop {
		if top, err = newProxyTop(log, reg, *topTokenFile); err != nil {
			return err
		}
		if *topPublic {
			mounts = map[string]http.Handler{"/top": top.handler}
		}
	}
	var accessLogger *slog.Logger
	if *accessLog {
		buf := newLineBuffer(stderr)
		defer buf.Flush()
		if accessLogger, err = lf.logger(buf); err != nil {
			return err
		}
		accessLogger = accessLogger.With("component", "proxy")
	}
	srv, err := proxy.New(proxy.Config{
		Listen:              *listen,
		HTTPListen:          *httpListen,
		Upstream:            *upstream,
		AllowRemoteUpstream: *allowRemote,
		GetCertificate:      certMgr.GetCertificate,
		NextProtos:          certMgr.NextProtos(),
		WrapHTTP:            certMgr.HTTPHandler,
		Names:               certMgr.Names(),
		TrustedProxies:      trusted,
		UpstreamTimeout:     *upstreamTimeout,
		IdleTimeout:         *idleTimeout,
		ReadHeaderTimeout:   *headerTimeout,
		MaxBodyBytes:        *maxBody,
		ShutdownTimeout:     *shutdownTimeout,
		HSTS:                time.Duration(*hsts) * time.Second,
		Rewrites:            rw,
		Mounts:              mounts,
		AccessLog:           accessLogger,
		Logger:              log.With("component", "proxy"),
		Registerer:          reg,
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
			{Name: "certificate", Func: certMgr.Ready},
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
	if *cf.ech != "" {
		adm.Handle("GET /ech", echHandler(certMgr.ECHConfigList))
		// TODO(lead): proxy.Config needs the ECH hook before handshakes can
		// use the keys: GetEncryptedClientHelloKeys: certMgr.ECHKeys().
	}

	services := []service{
		{name: "certs", run: certMgr.Run, reload: certMgr.Reload},
		{name: "proxy", run: srv.Serve},
	}
	if top != nil {
		services = append(services, top.mount(adm))
	}

	if syncer != nil {
		services = append(services, service{name: "configsync", run: syncer.Run, reload: syncer.Reload})
	}

	if err := srv.Listen(); err != nil {
		return err
	}
	if err := adm.Listen(); err != nil {
		return err
	}
	if *sandbox {
		if err := restrictFiles(log, sandboxed); err != nil {
			return err
		}
	}
	log.Info("ready", "https_addr", srv.Addr(), "http_addr", srv.HTTPAddr(), "admin_addr", adm.Addr(), "upstream", *upstream)
	err = serve(ctx, log, adm, services...)
	if err == nil {
		log.Info("stopped")
	}
	return err
}
