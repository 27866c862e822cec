package proxy

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// handler forwards requests to the upstream. It is the request path: keep
// it free of allocations that do not pay for themselves.
type handler struct {
	cfg        Config
	up         *Upstream
	pool       *pool
	names      nameSet
	metrics    *metrics
	log        *slog.Logger
	hsts       string         // Strict-Transport-Security value, or ""
	errorPages map[int][]byte // --error-pages, by status code
	shield     *shield        // limits and the like (shield.go); nil when all are off
	altSvc     *altSvc        // announces HTTP/3; nil when it is off

	// watch cuts stalled response writes while Serve runs; without it each
	// write arms its own deadline. See respWriter.
	watch atomic.Pointer[stallWatch]
}

func newHandler(cfg Config, up *Upstream, m *metrics, pages map[int][]byte) *handler {
	h := &handler{cfg: cfg, up: up, names: newNameSet(cfg.Names), metrics: m, log: cfg.Logger, errorPages: pages}
	if cfg.HSTS > 0 {
		h.hsts = "max-age=" + strconv.FormatInt(int64(cfg.HSTS/time.Second), 10)
	}
	h.pool = newPool(up.Network, up.Address, cfg.DialTimeout, cfg.MaxUpstreamConns, cfg.UpstreamWait, cfg.Logger, m)
	m.watchPool(h.pool)
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := newRespWriter(w, h.cfg.IdleTimeout)
	if watch := h.watch.Load(); watch != nil {
		watch.add(rw)
	}
	defer rw.release() // runs after finish
	defer h.finish(rw, r, start)
	if h.altSvc != nil && r.ProtoMajor < 3 {
		if v := h.altSvc.forHost(r.Host); v != nil {
			rw.Header()["Alt-Svc"] = v
		}
	}
	if ci, _ := r.Context().Value(connInfoKey{}).(*connInfo); ci != nil {
		if r.TLS == nil {
			r.TLS = ci.tls // net/http fills it only for a *tls.Conn
		}
		if ci.h1 != nil && len(r.TransferEncoding) > 0 && ci.h1.sawCL {
			// Content-Length and Transfer-Encoding both, perhaps: framed
			// by the latter, answered, then closed (RFC 9112 §6.3).
			rw.Header()["Connection"] = []string{"close"}
		}
	}

	host := r.Host
	if host == "" {
		// HTTP/1.0 without Host: the name the client asked TLS for, so
		// that the app and its redirects see a real name, not its own
		// loopback address.
		host = h.defaultHost(r)
	}
	if !h.names.match(host) {
		h.writeError(rw, http.StatusMisdirectedRequest)
		return
	}
	if h.cfg.Mounts != nil {
		if mh := mountFor(h.cfg.Mounts, r.URL.Path); mh != nil {
			mh.ServeHTTP(rw, r)
			return
		}
	}
	target, ok := originForm(r.RequestURI)
	switch {
	case r.Method == http.MethodConnect:
		if proto := connectProtocol(r); proto != "" && ok {
			// Extended CONNECT: a WebSocket over an HTTP/2 or HTTP/3 stream.
			h.forwardExtendedConnect(rw, r, host, target, proto)
			return
		}
		// Only a forward proxy tunnels; an app may answer 200 and leave
		// the client believing it has one.
		rw.Header()["Allow"] = []string{"GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE"}
		h.writeError(rw, http.StatusMethodNotAllowed)
		return
	case !ok:
		h.writeError(rw, http.StatusBadRequest)
		return
	}
	if r.ProtoMajor >= 2 && r.Context().Err() != nil {
		// The client reset the stream before we began: do not bother the
		// app (HTTP/2 rapid reset; HTTP/3 alike).
		rw.upstreamErr = reasonCanceled
		h.noteReset(r)
		return
	}
	if max := h.cfg.MaxBodyBytes; max > 0 && r.ContentLength > max {
		h.writeError(rw, http.StatusRequestEntityTooLarge)
		return
	}
	if h.shield != nil {
		h.shield.forward(rw, r, host, target)
		return
	}
	h.forward(rw, r, host, target)
}

// originForm returns the request target to send to the app: exactly the
// bytes the client sent, with an absolute-form target cut to origin-form.
// The asterisk form is answered by net/http itself (OPTIONS *).
func originForm(uri string) (string, bool) {
	if uri != "" && uri[0] == '/' {
		return uri, true
	}
	i := strings.Index(uri, "://")
	if i <= 0 {
		return "", false
	}
	rest := uri[i+3:]
	j := strings.IndexAny(rest, "/?")
	switch {
	case j < 0:
		return "/", true
	case rest[j] == '?':
		return "/" + rest[j:], true
	}
	return rest[j:], true
}

// defaultHost names the request when it has no Host: the TLS server name,
// else the first --domain that is not a wildcard.
func (h *handler) defaultHost(r *http.Request) string {
	if r.TLS != nil && r.TLS.ServerName != "" {
		return r.TLS.ServerName
	}
	for _, n := range h.cfg.Names {
		if !strings.HasPrefix(n, "*") {
			return n
		}
	}
	return "localhost"
}

// fail answers a request whose exchange failed before the response began.
func (h *handler) fail(rw *respWriter, r *http.Request, err error) {
	code, reason := classify(err, r, rw.body)
	rw.upstreamErr = reason
	h.metrics.upstreamErrors.WithLabelValues(reason).Inc()
	if reason == reasonCanceled {
		h.noteReset(r)
		h.log.Debug("client canceled request", "method", r.Method, "path", r.URL.Path, "remote_addr", r.RemoteAddr)
		return
	}
	h.log.Warn("upstream error", "reason", reason, "status", code, "method", r.Method, "path", r.URL.Path,
		"upstream", h.up.Address, "err", err)
	clear(rw.Header())
	if code == http.StatusServiceUnavailable {
		rw.Header()["Retry-After"] = []string{"1"}
	}
	if r.ProtoMajor == 1 && (code == http.StatusBadRequest || code == http.StatusRequestTimeout || code == http.StatusRequestEntityTooLarge) {
		// The rest of the body is not worth reading. HTTP/2 and HTTP/3
		// end the stream alone, and forbid the header: an HTTP/3 client
		// refuses a response that carries it.
		rw.Header()["Connection"] = []string{"close"}
	}
	h.writeError(rw, code)
}

// writeError answers with an --error-pages page or the status text only:
// internal detail goes to the log, never to the client.
func (h *handler) writeError(w http.ResponseWriter, code int) {
	hdr := w.Header()
	page, ok := h.errorPages[code]
	if ok {
		hdr["Content-Type"] = []string{"text/html; charset=utf-8"}
	} else {
		hdr["Content-Type"] = []string{"text/plain; charset=utf-8"}
		page = []byte(http.StatusText(code) + "\n")
	}
	hdr["Content-Length"] = []string{strconv.Itoa(len(page))}
	hdr["X-Content-Type-Options"] = []string{"nosniff"}
	hdr["Cache-Control"] = []string{"no-store"}
	if h.hsts != "" {
		hdr["Strict-Transport-Security"] = []string{h.hsts}
	}
	w.WriteHeader(code)
	w.Write(page)
}

// finish records metrics and the access log line. It runs deferred so that
// aborted responses (http.ErrAbortHandler) are counted too.
func (h *handler) finish(rw *respWriter, r *http.Request, start time.Time) {
	status := rw.status
	if status == 0 {
		status = http.StatusOK
		if rw.upstreamErr == reasonCanceled {
			status = statusClientClosed
		}
	}
	end := time.Now() // one clock read for the metrics and the log line
	d := end.Sub(start).Seconds()
	h.metrics.request(status, r.Method, r.ProtoMajor).Inc()
	h.metrics.duration.Observe(d)
	var upstream float64
	if rw.upstreamErr == "" && !rw.headerAt.IsZero() {
		upstream = rw.headerAt.Sub(start).Seconds()
		h.metrics.upstreamDuration.Observe(upstream)
	}
	h.accessLog(r, end, "https", status, rw.bytes, d, upstream)
}

// accessLog writes one access-log line, for either listener.
func (h *handler) accessLog(r *http.Request, end time.Time, scheme string, status int, bytes int64, d, upstream float64) {
	if h.cfg.AccessLog == nil {
		return
	}
	h.cfg.AccessLog.write(end, &accessEntry{
		scheme: scheme, method: r.Method, host: r.Host, path: r.URL.Path, proto: r.Proto, remote: r.RemoteAddr,
		status: status, bytes: bytes, duration: d, upstream: upstream,
	})
}

// noteReset counts a cancelled HTTP/2 stream against its connection and
// closes the connection when the client cancels too many too fast.
func (h *handler) noteReset(r *http.Request) {
	if r.ProtoMajor != 2 {
		return
	}
	ci, _ := r.Context().Value(connInfoKey{}).(*connInfo)
	if ci == nil || !ci.noteReset(time.Now()) {
		return
	}
	h.metrics.resetCloses.Inc()
	h.log.Warn("closing connection: too many cancelled streams (HTTP/2 rapid reset)", "remote_addr", r.RemoteAddr)
	ci.conn.Close()
}

// Rapid-reset guard: more than resetLimit streams cancelled by the client
// within resetWindow closes the connection. Browsers cancel a few streams
// when a page navigates away; nothing legitimate cancels hundreds a second.
const (
	resetLimit  = 100
	resetWindow = 10 * time.Second
)

type connInfoKey struct{}

// connInfo is per client connection, stored in its context by ConnContext.
type connInfo struct {
	conn net.Conn
	h1   *h1Conn              // the HTTP/1 connection; nil for HTTP/2
	tls  *tls.ConnectionState // net/http leaves r.TLS nil: the conns it gets are not *tls.Conns

	ident atomic.Pointer[clientIdentity] // the client certificate's, worked out at its first request

	mu          sync.Mutex
	windowStart time.Time
	resets      int
	closed      bool
}

// noteReset reports whether the connection should now be closed.
func (ci *connInfo) noteReset(now time.Time) bool {
	ci.mu.Lock()
	defer ci.mu.Unlock()
	if now.Sub(ci.windowStart) > resetWindow {
		ci.windowStart, ci.resets = now, 0
	}
	ci.resets++
	if ci.resets > resetLimit && !ci.closed {
		ci.closed = true
		return true
	}
	return false
}

// mountFor returns the handler mounted at path or at a parent of it.
func mountFor(mounts map[string]http.Handler, path string) http.Handler {
	for prefix, h := range mounts {
		if path == prefix || strings.HasPrefix(path, prefix) && path[len(prefix)] == '/' {
			return h
		}
	}
	return nil
}

// nameSet matches a request's Host against the served names.
type nameSet struct {
	exact     map[string]bool
	wildcards []string // ".example.com" for "*.example.com"
}

func newNameSet(names []string) nameSet {
	s := nameSet{exact: map[string]bool{}}
	for _, n := range names {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if rest, ok := strings.CutPrefix(n, "*"); ok {
			s.wildcards = append(s.wildcards, rest)
			continue
		}
		s.exact[n] = true
	}
	return s
}

// match reports whether host (possibly with a port) is served.
func (s nameSet) match(host string) bool {
	if len(s.exact) == 0 && len(s.wildcards) == 0 {
		return true
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if s.exact[host] {
		return true
	}
	for _, w := range s.wildcards {
		if rest, ok := strings.CutSuffix(host, w); ok && rest != "" && !strings.Contains(rest, ".") {
			return true
		}
	}
	return false
}

// loadErrorPages reads 502.html, 503.html and 504.html from dir. A missing
// page is served as the status text; a dir with none of them is an error.
func loadErrorPages(dir string) (map[int][]byte, error) {
	if dir == "" {
		return nil, nil
	}
	pages := map[int][]byte{}
	for _, code := range []int{502, 503, 504} {
		b, err := os.ReadFile(filepath.Join(dir, strconv.Itoa(code)+".html"))
		if err != nil {
			continue
		}
		pages[code] = b
	}
	if len(pages) == 0 {
		return nil, &pagesError{dir}
	}
	return pages, nil
}

type pagesError struct{ dir string }

func (e *pagesError) Error() string {
	return "--error-pages " + strconv.Quote(e.dir) + ": no readable 502.html, 503.html or 504.html in it"
}
