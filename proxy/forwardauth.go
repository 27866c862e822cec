package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http/httpguts"
)

// Forward auth, nginx's auth_request: before a request reaches the app,
// outrider asks an auth service about it — the same method, the client's
// headers, no body, and the original URI in X-Forwarded-Uri and
// X-Original-URI. A 2xx admits the request and copies the configured
// identity headers from the answer to the app (what the client sent under
// those names never passes); 401, 403 and redirects (a login page) go back
// to the client as the auth service gave them; anything else, or no answer,
// fails closed with 503.

// Results of an auth check, the values of the result label of
// outrider_proxy_auth_requests_total.
const (
	authAllowed    = "allowed"    // 2xx: on to the app
	authDenied     = "denied"     // 401 or 403, relayed
	authRedirected = "redirected" // 3xx, relayed
	authError      = "error"      // unreachable, too slow, or another status: 503
)

// maxAuthBody bounds the denial body relayed from the auth service.
const maxAuthBody = 64 << 10

type forwardAuth struct {
	url     *url.URL
	copy    []string // canonical header names copied from a 2xx answer
	client  *http.Client
	h       *handler
	results [4]prometheus.Counter // allowed, denied, redirected, error
	seconds prometheus.Histogram
}

// ParseAuthURL checks an --auth-url: absolute http or https with a host.
func ParseAuthURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Fragment != "" {
		return nil, fmt.Errorf("invalid --auth-url %q: want http(s)://host[:port]/path", raw)
	}
	return u, nil
}

func newForwardAuth(h *handler, cfg Config) *forwardAuth {
	if cfg.AuthURL == "" {
		return nil
	}
	u, _ := ParseAuthURL(cfg.AuthURL) // checked by Validate
	a := &forwardAuth{url: u, h: h}
	for _, k := range cfg.AuthCopyHeaders {
		a.copy = append(a.copy, textproto.CanonicalMIMEHeaderKey(k))
	}
	d := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	a.client = &http.Client{
		Transport: &http.Transport{
			DialContext:           d.DialContext,
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: cfg.AuthTimeout,
			TLSHandshakeTimeout:   cfg.DialTimeout,
			ForceAttemptHTTP2:     true,
		},
		Timeout: cfg.AuthTimeout,
		// A redirect is the auth service's answer for the client (to a
		// login page), never one to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	const ns, sub = "outrider", "proxy"
	results := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "auth_requests_total",
		Help: "Forward-auth checks by result: allowed (2xx), denied (401/403), redirected (3xx), error (503 to the client).",
	}, []string{"result"})
	for i, r := range []string{authAllowed, authDenied, authRedirected, authError} {
		a.results[i] = results.WithLabelValues(r)
	}
	a.seconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: ns, Subsystem: sub, Name: "auth_duration_seconds",
		Help: "Time the forward-auth service took to answer, in seconds.", Buckets: latencyBuckets,
	})
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(results, a.seconds)
	}
	return a
}

// check asks the auth service about r. It reports whether r goes on to the
// app; when not, it has answered the client.
func (a *forwardAuth) check(rw *respWriter, r *http.Request, host string) bool {
	for _, k := range a.copy {
		delete(r.Header, k) // only the auth service may set these
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.Method, a.url.String(), nil)
	if err != nil {
		return a.fail(rw, r, err)
	}
	for k, vv := range r.Header {
		if skipRequestHeader(k) || httpguts.HeaderValuesContainsToken(r.Header["Connection"], k) {
			continue
		}
		req.Header[k] = vv
	}
	_, ip, _ := clientIP(r.RemoteAddr)
	req.Header["X-Forwarded-For"] = []string{ip}
	req.Header["X-Forwarded-Proto"] = []string{"https"}
	req.Header["X-Forwarded-Host"] = []string{host}
	req.Header["X-Forwarded-Method"] = []string{r.Method}
	req.Header["X-Forwarded-Uri"] = []string{r.RequestURI}
	req.Header["X-Original-Method"] = []string{r.Method}
	req.Header["X-Original-Uri"] = []string{r.RequestURI}
	start := time.Now()
	resp, err := a.client.Do(req)
	a.seconds.Observe(time.Since(start).Seconds())
	if err != nil {
		if r.Context().Err() != nil {
			rw.upstreamErr = reasonCanceled
			return false
		}
		return a.fail(rw, r, err)
	}
	defer resp.Body.Close()
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		a.results[0].Inc()
		for _, k := range a.copy {
			if v := resp.Header[k]; len(v) > 0 {
				r.Header[k] = v
			}
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxAuthBody)) // keep the connection
		return true
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		a.results[1].Inc()
	case code >= 300 && code < 400:
		a.results[2].Inc()
	default:
		return a.fail(rw, r, fmt.Errorf("auth service answered %d", code))
	}
	a.relay(rw, resp)
	return false
}

// relay passes the auth service's refusal or redirect to the client.
func (a *forwardAuth) relay(rw *respWriter, resp *http.Response) {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxAuthBody))
	hdr := rw.Header()
	for k, vv := range resp.Header {
		switch k {
		case "Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length", "Trailer", "Upgrade", "Proxy-Authenticate":
			continue
		}
		hdr[k] = vv
	}
	hdr["Content-Length"] = []string{strconv.Itoa(len(body))}
	if hdr["Cache-Control"] == nil {
		hdr["Cache-Control"] = []string{"no-store"}
	}
	if a.h.hsts != "" {
		hdr["Strict-Transport-Security"] = []string{a.h.hsts}
	}
	rw.WriteHeader(resp.StatusCode)
	rw.Write(body)
}

// fail answers 503: without a verdict, nothing reaches the app.
func (a *forwardAuth) fail(rw *respWriter, r *http.Request, err error) bool {
	a.results[3].Inc()
	a.h.log.Warn("auth service failed; refusing the request", "method", r.Method, "path", r.URL.Path, "err", err)
	rw.Header()["Retry-After"] = []string{"1"}
	a.h.writeError(rw, http.StatusServiceUnavailable)
	return false
}
