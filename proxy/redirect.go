package proxy

import (
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// redirectHandler answers plain HTTP with a 308 to the same path and query
// over HTTPS. 308, not 301, so that a POST stays a POST.
type redirectHandler struct {
	names     nameSet
	httpsPort string // the HTTPS listener's port; omitted from URLs when 443
}

func (h *redirectHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		host = hh
	}
	if host == "" || !h.names.match(host) {
		http.Error(w, http.StatusText(http.StatusMisdirectedRequest), http.StatusMisdirectedRequest)
		return
	}
	if strings.Contains(host, ":") { // IPv6 literal
		host = "[" + host + "]"
	}
	if h.httpsPort != "443" {
		host += ":" + h.httpsPort
	}
	target := "https://" + host + r.URL.RequestURI()
	w.Header().Set("Location", target)
	w.Header().Set("Connection", "close")
	w.WriteHeader(http.StatusPermanentRedirect)
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		io.WriteString(w, "Redirecting to "+target+"\n")
	}
}

// logPlain access-logs what the plain-HTTP listener answers (308s and ACME
// HTTP-01 challenges) in the same form as the HTTPS listener's lines.
func (h *handler) logPlain(next http.Handler) http.Handler {
	if h.cfg.AccessLog == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		end := time.Now()
		h.accessLog(r, end, "http", sw.status, sw.bytes, end.Sub(start).Seconds(), 0)
	})
}

// statusWriter records what a handler answered.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
