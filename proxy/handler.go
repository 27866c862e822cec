package proxy

import (
	"context"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// handler forwards requests to the upstream. It is the request path: keep
// it free of allocations that do not pay for themselves.
type handler struct {
	cfg     Config
	up      *Upstream
	rp      *httputil.ReverseProxy
	names   nameSet
	metrics *metrics
	log     *slog.Logger
	hsts    string // Strict-Transport-Security value, or ""

	// watch cuts stalled response writes while Serve runs; without it each
	// write arms its own deadline. See respWriter.
	watch atomic.Pointer[stallWatch]
}

func newHandler(cfg Config, up *Upstream, m *metrics) *handler {
	h := &handler{cfg: cfg, up: up, names: newNameSet(cfg.Names), metrics: m, log: cfg.Logger}
	if cfg.HSTS > 0 {
		h.hsts = "max-age=" + strconv.FormatInt(int64(cfg.HSTS/time.Second), 10)
	}
	dialer := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		Proxy: nil, // never an HTTP_PROXY from the environment: the app is local
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, up.Network, up.Address)
			if err != nil {
				return nil, err
			}
			return newIdleConn(c, cfg.IdleTimeout), nil
		},
		MaxIdleConns:           1024,
		MaxIdleConnsPerHost:    1024,
		IdleConnTimeout:        90 * time.Second,
		ResponseHeaderTimeout:  cfg.UpstreamTimeout,
		ExpectContinueTimeout:  time.Second,
		DisableCompression:     true, // pass the app's encoding through untouched
		MaxResponseHeaderBytes: 1 << 20,
	}
	h.rp = &httputil.ReverseProxy{
		Rewrite:        h.rewrite,
		Transport:      transport,
		BufferPool:     bufferPool{},
		ModifyResponse: h.modifyResponse,
		ErrorHandler:   h.errorHandler,
		ErrorLog:       log.New(io.Discard, "", 0), // ErrorHandler logs
	}
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

	if !h.names.match(r.Host) {
		h.writeError(rw, http.StatusMisdirectedRequest)
		return
	}
	if h.cfg.Mounts != nil {
		if mh := mountFor(h.cfg.Mounts, r.URL.Path); mh != nil {
			mh.ServeHTTP(rw, r)
			return
		}
	}
	if r.ProtoMajor == 2 && r.Context().Err() != nil {
		// The client reset the stream before we began: do not bother the
		// app (HTTP/2 rapid reset).
		rw.upstreamErr = reasonCanceled
		h.noteReset(r)
		return
	}
	if max := h.cfg.MaxBodyBytes; max > 0 && r.ContentLength > max {
		h.writeError(rw, http.StatusRequestEntityTooLarge)
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		if h.cfg.MaxBodyBytes > 0 {
			// w, not rw: MaxBytesReader tells net/http to close the
			// connection instead of draining an oversized body.
			r.Body = http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes)
		}
		b := &idleBody{ReadCloser: r.Body, dl: rw.dl, idle: h.cfg.IdleTimeout}
		r.Body, rw.body = b, b
		if r.ContentLength < 0 && r.ProtoMajor == 1 {
			// A chunked body: read its first chunk header before the app
			// sees anything, so a malformed one is a 400 that never reaches
			// the app. Later chunks stream, and a malformed one aborts the
			// exchange.
			first, err := prefetch(b)
			if err != nil {
				h.errorHandler(rw, r, err)
				return
			}
			r.Body = first
		}
	}
	h.rp.ServeHTTP(rw, r)
}

// rewrite builds the outbound request. ReverseProxy has already removed
// hop-by-hop headers and every client-sent Forwarded/X-Forwarded-* header.
func (h *handler) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(h.up.URL)
	pr.Out.Host = pr.In.Host // the app sees the public host, as it would without us
	if httpguts.HeaderValuesContainsToken(pr.Out.Header["Upgrade"], "h2c") {
		// h2c smuggling: an HTTP/2 cleartext upgrade would tunnel past us.
		pr.Out.Header.Del("Upgrade")
		pr.Out.Header.Del("Connection")
	}
	client, _ := netip.ParseAddrPort(pr.In.RemoteAddr)
	setForwarded(pr.Out.Header, pr.In.Header, client.Addr(), pr.In.Host, trusted(h.cfg.TrustedProxies, client.Addr()))
	if h.cfg.Rewrites.Destination {
		rewriteDestination(pr.Out.Header, pr.In.Host)
	}
}

func (h *handler) modifyResponse(resp *http.Response) error {
	if h.hsts != "" {
		resp.Header.Set("Strict-Transport-Security", h.hsts)
	}
	rewriteResponse(resp.Header, h.cfg.Rewrites, resp.Request.Host, h.up.URL.Host)
	return nil
}

func (h *handler) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	// ReverseProxy passes its own request, whose Body it may have wrapped:
	// the body we installed is found through our ResponseWriter.
	rw, _ := w.(*respWriter)
	var body *idleBody
	if rw != nil {
		body = rw.body
	}
	code, reason := classify(err, r, body)
	if rw != nil {
		rw.upstreamErr = reason
	}
	h.metrics.upstreamErrors.WithLabelValues(reason).Inc()
	if reason == reasonCanceled {
		h.noteReset(r)
		h.log.Debug("client canceled request", "method", r.Method, "path", r.URL.Path, "remote_addr", r.RemoteAddr)
		return
	}
	h.log.Warn("upstream error", "reason", reason, "status", code, "method", r.Method, "path", r.URL.Path,
		"upstream", h.up.Address, "err", err)
	h.writeError(w, code)
}

// writeError answers with the status text only: internal detail goes to the
// log, never to the client.
func (h *handler) writeError(w http.ResponseWriter, code int) {
	hdr := w.Header()
	hdr.Set("Content-Type", "text/plain; charset=utf-8")
	hdr.Set("X-Content-Type-Options", "nosniff")
	if h.hsts != "" {
		hdr.Set("Strict-Transport-Security", h.hsts)
	}
	w.WriteHeader(code)
	io.WriteString(w, http.StatusText(code)+"\n")
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
	end := time.Now()
	d := end.Sub(start).Seconds()
	h.metrics.request(status, r.Method).Inc()
	h.metrics.duration.Observe(d)
	var upstream float64
	if rw.upstreamErr == "" && !rw.headerAt.IsZero() {
		upstream = rw.headerAt.Sub(start).Seconds()
		h.metrics.upstreamDuration.Observe(upstream)
	}
	if h.cfg.AccessLog == nil {
		return
	}
	h.cfg.AccessLog.LogAttrs(r.Context(), slog.LevelInfo, "request",
		slog.String("method", r.Method),
		slog.String("host", r.Host),
		slog.String("path", r.URL.Path),
		slog.String("proto", r.Proto),
		slog.Int("status", status),
		slog.Int64("bytes", rw.bytes),
		slog.Float64("duration_seconds", d),
		slog.Float64("upstream_duration_seconds", upstream),
		slog.String("remote_addr", r.RemoteAddr),
	)
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

// prefetch reads the first byte of a body and returns a body that yields
// it again followed by the rest. io.EOF on the first read is not an error.
func prefetch(b *idleBody) (io.ReadCloser, error) {
	var one [1]byte
	n, err := b.Read(one[:])
	if err != nil && err != io.EOF {
		return nil, err
	}
	return &prefetched{idleBody: b, first: one[:n]}, nil
}

// prefetched is an idleBody with bytes already read in front.
type prefetched struct {
	*idleBody
	first []byte
}

func (p *prefetched) Read(b []byte) (int, error) {
	if len(p.first) > 0 {
		n := copy(b, p.first)
		p.first = p.first[n:]
		return n, nil
	}
	return p.idleBody.Read(b)
}

// bufferPool recycles the 32 KiB copy buffers of ReverseProxy. The pool
// holds *[32 KiB]byte: a pointer to an array converts to and from a slice
// without allocating, where Put(&b) of a slice would allocate a slice header
// on every call.
type bufferPool struct{}

const copyBufferSize = 32 << 10

var buffers = sync.Pool{New: func() any { return new([copyBufferSize]byte) }}

func (bufferPool) Get() []byte { return buffers.Get().(*[copyBufferSize]byte)[:] }

func (bufferPool) Put(b []byte) {
	if cap(b) >= copyBufferSize {
		buffers.Put((*[copyBufferSize]byte)(b[:copyBufferSize]))
	}
}
