package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Server. Listen, Upstream and GetCertificate are
// required; every other zero value has a documented default.
type Config struct {
	// Listen is the HTTPS address, e.g. ":443".
	Listen string
	// HTTP3 also serves HTTP/3 (QUIC) over UDP on Listen's address, with
	// the port the TCP listener bound, and announces it to HTTP/1.1 and
	// HTTP/2 clients with Alt-Svc. Off when false; the command turns it on
	// by default.
	HTTP3 bool
	// HTTPListen is the plain-HTTP address that redirects to HTTPS with 308
	// (and answers ACME HTTP-01 through WrapHTTP). Empty turns it off.
	HTTPListen string

	// Upstream is the app: "http://127.0.0.1:8080" (a path is prefixed to
	// every request) or "unix:///run/app.sock".
	Upstream string
	// AllowRemoteUpstream permits an upstream host that is not loopback.
	// Off by default: traffic to the upstream is plain HTTP.
	AllowRemoteUpstream bool

	// GetCertificate supplies the certificate for each TLS handshake.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// TLSMinVersion is the lowest TLS version accepted: tls.VersionTLS12
	// (Mozilla "intermediate") or tls.VersionTLS13 ("modern"). If zero,
	// TLS 1.2.
	TLSMinVersion uint16
	// GetEncryptedClientHelloKeys supplies the ECH keys for each handshake
	// (--ech). If nil, ECH is off.
	GetEncryptedClientHelloKeys func(*tls.ClientHelloInfo) ([]tls.EncryptedClientHelloKey, error)
	// NextProtos are ALPN protocols offered after h2 and http/1.1, such as
	// "acme-tls/1" for the TLS-ALPN-01 challenge.
	NextProtos []string
	// WrapHTTP wraps the plain-HTTP handler (the HTTPS redirect), so that
	// ACME HTTP-01 challenges can be answered first. If nil, no wrapping.
	WrapHTTP func(http.Handler) http.Handler

	// Names are the host names served. A request whose Host is not one of
	// them (a "*.example.com" entry matches one label) is answered 421.
	// If empty, any Host is served.
	Names []string
	// TrustedProxies are the peers whose X-Forwarded-*/Forwarded headers
	// are kept and extended; from anyone else they are replaced.
	TrustedProxies []netip.Prefix
	// ProxyProtocolFrom are the peers (load balancers) allowed to open a
	// connection with a PROXY protocol v1 or v2 header, on both listeners.
	// From them the header is optional and its source address is the
	// client's address everywhere (X-Forwarded-For, logs, limits, ACLs); a
	// header from any other peer closes the connection. If empty, no
	// header is read and one is a failed handshake.
	ProxyProtocolFrom []netip.Prefix

	// UpstreamTimeout bounds the wait for the upstream's response headers;
	// past it the client gets 504. If zero, 60s.
	UpstreamTimeout time.Duration
	// DialTimeout bounds connecting to the upstream. If zero, 5s.
	DialTimeout time.Duration
	// UpstreamWait is how long a request whose connection the app refuses
	// (it is restarting) waits for the app to listen again before it gets
	// 502. Zero turns waiting off; the command's default is 10s. At most
	// 1024 requests wait at once; the rest get 502 at once.
	UpstreamWait time.Duration
	// MaxUpstreamConns caps the connections to the app. Requests beyond it
	// wait for a free one within UpstreamTimeout (at most 1024 wait; the
	// rest get 503). If zero, DefaultMaxUpstreamConns.
	MaxUpstreamConns int
	// MaxConns caps the client connections open at once on the HTTPS
	// listener. At the cap the connection idle the longest between requests
	// is closed to make room; when none is idle the new one is refused. If
	// zero, DefaultMaxConns(MaxUpstreamConns).
	MaxConns int
	// KeepUnderscoreHeaders forwards request header names that contain
	// "_". Off by default, as nginx's underscores_in_headers: CGI, PHP and
	// WSGI map "_" and "-" to the same variable, so X_Forwarded_For could
	// pose as X-Forwarded-For and Content_Length as Content-Length.
	KeepUnderscoreHeaders bool
	// ErrorPages is a directory holding 502.html, 503.html and 504.html,
	// served instead of the bare status text. Empty: the status text.
	ErrorPages string
	// IdleTimeout closes a keep-alive connection, a request or response
	// body, a WebSocket or an SSE stream on which no byte moved for this
	// long, in either direction. Long transfers that keep moving are never
	// cut. If zero, 5m.
	IdleTimeout time.Duration
	// ReadHeaderTimeout bounds reading a request's headers (slowloris).
	// If zero, 10s.
	ReadHeaderTimeout time.Duration
	// MaxHeaderBytes bounds a request's header size. If zero, 64 KiB.
	MaxHeaderBytes int
	// MaxBodyBytes bounds a request body. A request declaring a larger
	// Content-Length is answered 413 before the app sees it; a chunked or
	// HTTP/2 body that grows past it is cut, the app's read fails, and the
	// client gets 413 when no response has begun. If zero, bodies are
	// unlimited.
	MaxBodyBytes int64
	// ClientCAFile is a PEM bundle of the CAs whose client certificates are
	// accepted; reloaded when it changes. Empty: no client certificates
	// are asked for.
	ClientCAFile string
	// ClientAuth is ClientAuthRequire (the default) or ClientAuthOptional.
	ClientAuth string
	// AllowClients are rules a verified client certificate must match one
	// of: "cn=NAME", "dns=NAME", "ou=UNIT", "uri=URI" (a trailing "*"
	// matches by prefix). If empty, any certificate that verifies is
	// admitted.
	AllowClients []string
	// ClientCRLFile is a CRL (PEM or DER, signed by a ClientCAFile CA);
	// reloaded when it changes.
	ClientCRLFile string

	// AuthURL is a forward-auth service (nginx's auth_request) asked
	// about every request before the app; see forwardauth.go. Empty: off.
	AuthURL string
	// AuthCopyHeaders are the headers copied from the auth service's 2xx
	// answer to the app's request; the client's own under these names are
	// always removed.
	AuthCopyHeaders []string
	// AuthTimeout bounds one forward-auth check; past it the client gets
	// 503. If zero, 10s.
	AuthTimeout time.Duration

	// BufferRequests, when positive, is the largest request body read
	// whole from the client before the app is contacted (see buffer.go);
	// larger ones stream. Zero: every body streams.
	BufferRequests int64
	// BufferMemory is how much of a buffered body is held in memory; the
	// rest goes to an unlinked file in $TMPDIR. If zero, 1 MiB.
	BufferMemory int64

	// Compress lists the encodings applied to compressible responses the
	// app left uncompressed: "gzip", "zstd", in order of preference. Empty:
	// off. See compress.go.
	Compress []string
	// CompressSecrets compresses responses that set cookies or answer an
	// authenticated request too, which the BREACH guard otherwise leaves
	// uncompressed.
	CompressSecrets bool

	// MaxInflight caps the requests at the app at once (a WebSocket or a
	// stream holds its slot while open). Requests beyond it wait in a FIFO
	// queue of at most 1024 for up to QueueTimeout, then get 503 with
	// Retry-After. If zero, no cap.
	MaxInflight int
	// QueueTimeout is the longest wait for a MaxInflight slot. If zero, 10s.
	QueueTimeout time.Duration
	// RateLimit is the rate of requests allowed per client address (the
	// connection's, after PROXY protocol; behind TrustedProxies the nearest
	// untrusted X-Forwarded-For address; IPv6 by /64). Over it: 429 with
	// Retry-After. The zero Rate turns it off.
	RateLimit Rate
	// RateBurst is how many requests a client may make at once before the
	// rate applies. If zero, RateLimit.Count (100 for "100/m").
	RateBurst int

	// ShutdownTimeout is how long Serve waits for in-flight requests after
	// its context is done. If zero, 30s.
	ShutdownTimeout time.Duration

	// HSTS, when positive, adds Strict-Transport-Security with this max-age.
	HSTS time.Duration
	// Rewrites are the legacy-app fixes applied; see [Rewrites].
	Rewrites Rewrites
	// Mounts are paths outrider answers itself on the HTTPS listener instead
	// of passing them to the app, such as "/top" (which also matches
	// "/top/…"). Their handlers must do their own authentication.
	Mounts map[string]http.Handler
	// AccessLog receives one line per request, in the form of the other
	// log lines. If nil, there is no access log.
	AccessLog *AccessLog

	// Logger receives lifecycle and access logs. If nil, logs are discarded.
	Logger *slog.Logger
	// Registerer receives the proxy metrics. If nil, they are not exported.
	Registerer prometheus.Registerer
}

// Rewrites are fixes for an app that believes it is served over plain HTTP
// at its own address.
type Rewrites struct {
	// Location rewrites Location, Content-Location and Refresh headers that
	// point at http://<public host> or at the upstream's own address to the
	// public https:// origin.
	Location bool
	// Cookie adds the Secure attribute to every Set-Cookie.
	Cookie bool
	// Destination rewrites an inbound WebDAV Destination header from
	// https://<public host> to http://<public host>.
	Destination bool
}

// AllRewrites turns every legacy-app fix on; it is outrider's default.
var AllRewrites = Rewrites{Location: true, Cookie: true, Destination: true}

// ParseRewrites parses a list such as ["location", "cookie"]. An empty list
// turns every rewrite off.
func ParseRewrites(names []string) (Rewrites, error) {
	var r Rewrites
	for _, n := range names {
		switch strings.ToLower(strings.TrimSpace(n)) {
		case "location":
			r.Location = true
		case "cookie":
			r.Cookie = true
		case "destination":
			r.Destination = true
		default:
			return Rewrites{}, fmt.Errorf("unknown rewrite %q (want location, cookie or destination)", n)
		}
	}
	return r, nil
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.UpstreamTimeout, 60*time.Second)
	def(&c.DialTimeout, 5*time.Second)
	def(&c.IdleTimeout, 5*time.Minute)
	def(&c.ReadHeaderTimeout, 10*time.Second)
	def(&c.ShutdownTimeout, 30*time.Second)
	def(&c.QueueTimeout, 10*time.Second)
	def(&c.AuthTimeout, 10*time.Second)
	if c.BufferMemory == 0 {
		c.BufferMemory = 1 << 20
	}
	if c.RateBurst == 0 {
		c.RateBurst = max(1, int(math.Round(c.RateLimit.Count)))
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 64 << 10
	}
	if c.TLSMinVersion == 0 {
		c.TLSMinVersion = tls.VersionTLS12
	}
	if c.MaxUpstreamConns == 0 {
		c.MaxUpstreamConns = DefaultMaxUpstreamConns
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns(c.MaxUpstreamConns)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports every problem with the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("--listen is required"))
	}
	if c.GetCertificate == nil {
		errs = append(errs, errors.New("no certificate source"))
	}
	if _, err := ParseUpstream(c.Upstream, c.AllowRemoteUpstream); err != nil {
		errs = append(errs, err)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"upstream timeout", c.UpstreamTimeout}, {"dial timeout", c.DialTimeout}, {"idle timeout", c.IdleTimeout},
		{"read header timeout", c.ReadHeaderTimeout}, {"shutdown timeout", c.ShutdownTimeout}, {"hsts", c.HSTS},
		{"upstream wait", c.UpstreamWait}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %v is negative", d.name, d.v))
		}
	}
	if c.MaxHeaderBytes < 0 {
		errs = append(errs, fmt.Errorf("max header bytes %d is negative", c.MaxHeaderBytes))
	}
	if v := c.TLSMinVersion; v != 0 && v != tls.VersionTLS12 && v != tls.VersionTLS13 {
		errs = append(errs, fmt.Errorf("TLS minimum version %#x: want TLS 1.2 or 1.3", v))
	}
	if c.MaxConns < 0 {
		errs = append(errs, fmt.Errorf("max conns %d is negative", c.MaxConns))
	}
	if c.MaxUpstreamConns < 0 {
		errs = append(errs, fmt.Errorf("max upstream conns %d is negative", c.MaxUpstreamConns))
	}
	errs = append(errs, c.validateShield()...)
	if c.MaxBodyBytes < 0 {
		errs = append(errs, fmt.Errorf("max body bytes %d is negative", c.MaxBodyBytes))
	}
	for p := range c.Mounts {
		if !strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
			errs = append(errs, fmt.Errorf("invalid mount %q: want a path such as /top", p))
		}
	}
	for _, n := range c.Names {
		if n == "" || strings.ContainsAny(n, "/: ") {
			errs = append(errs, fmt.Errorf("invalid name %q: want a host name such as app.example.com", n))
		}
	}
	return errors.Join(errs...)
}

// Upstream is a parsed upstream address.
type Upstream struct {
	// URL is what requests are rewritten to: scheme, host and path prefix.
	// For a unix socket its host is "localhost".
	URL *url.URL
	// Network and Address are what is dialed: "tcp" and "127.0.0.1:8080", or
	// "unix" and "/run/app.sock".
	Network, Address string
}

// ParseUpstream parses an upstream address. A host that is not loopback is
// refused unless allowRemote.
func ParseUpstream(raw string, allowRemote bool) (*Upstream, error) {
	if raw == "" {
		return nil, errors.New("--upstream is required (e.g. http://127.0.0.1:8080 or unix:///run/app.sock)")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("invalid upstream %q: want http://host:port or unix:///path.sock", raw)
	}
	switch u.Scheme {
	case "unix":
		path := u.Path
		if u.Host != "" || path == "" {
			return nil, fmt.Errorf("invalid upstream %q: want unix:///absolute/path.sock", raw)
		}
		return &Upstream{
			URL:     &url.URL{Scheme: "http", Host: "localhost"},
			Network: "unix", Address: path,
		}, nil
	case "http":
	case "https":
		return nil, fmt.Errorf("invalid upstream %q: outrider speaks plain HTTP to the app; use http://", raw)
	default:
		return nil, fmt.Errorf("invalid upstream %q: want http://host:port or unix:///path.sock", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("invalid upstream %q: no user, query or fragment allowed", raw)
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return nil, fmt.Errorf("invalid upstream %q: no host", raw)
	}
	if port == "" {
		port = "80"
	}
	if !allowRemote && !isLoopback(host) {
		return nil, fmt.Errorf("upstream host %q is not loopback: the app should listen on 127.0.0.1 only (pass --allow-remote-upstream to forward plain HTTP off this host)", host)
	}
	return &Upstream{
		URL:     &url.URL{Scheme: "http", Host: u.Host, Path: strings.TrimSuffix(u.Path, "/")},
		Network: "tcp", Address: net.JoinHostPort(host, port),
	}, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// ParseTLSVersion parses --tls-min-version: "1.2" or "1.3".
func ParseTLSVersion(s string) (uint16, error) {
	switch s {
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("--tls-min-version %q: want 1.2 (Mozilla intermediate) or 1.3 (modern)", s)
}

// ParsePrefixes parses CIDRs or single addresses (taken as /32 or /128).
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("invalid CIDR %q", s)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("invalid CIDR %q", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}
