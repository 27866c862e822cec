package proxy

import (
	"io"
	"net"
	"net/http"
	"strings"
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
