package proxy

import (
	"net/http"
	"net/netip"
	"strings"
)

// setForwarded sets X-Forwarded-For, -Proto, -Host and Forwarded (RFC 7239)
// on out. ReverseProxy has already removed whatever the client sent on out;
// in is consulted only when the peer is a trusted proxy, whose headers are
// kept and extended.
func setForwarded(out, in http.Header, client netip.Addr, host string, trusted bool) {
	ip := client.Unmap().String()
	xff, xfp, xfh, fwd := ip, "https", host, forwardedElement(client, host)
	if trusted {
		if prior := in.Values("X-Forwarded-For"); len(prior) > 0 {
			xff = strings.Join(prior, ", ") + ", " + ip
		}
		if prior := in.Get("X-Forwarded-Proto"); prior != "" {
			xfp = prior
		}
		if prior := in.Get("X-Forwarded-Host"); prior != "" {
			xfh = prior
		}
		if prior := in.Values("Forwarded"); len(prior) > 0 {
			fwd = strings.Join(prior, ", ") + ", " + fwd
		}
	}
	out["X-Forwarded-For"] = []string{xff}
	out["X-Forwarded-Proto"] = []string{xfp}
	out["X-Forwarded-Host"] = []string{xfh}
	out["Forwarded"] = []string{fwd}
}

// forwardedElement builds one RFC 7239 forwarded-element for a client
// reaching us over HTTPS. IPv6 addresses and hosts with a port are quoted.
func forwardedElement(client netip.Addr, host string) string {
	var b strings.Builder
	b.Grow(32 + len(host))
	b.WriteString("for=")
	if a := client.Unmap(); a.Is6() {
		b.WriteString(`"[`)
		b.WriteString(a.String())
		b.WriteString(`]"`)
	} else {
		b.WriteString(a.String())
	}
	if host != "" {
		b.WriteString(";host=")
		b.WriteString(quoteIfNeeded(host))
	}
	b.WriteString(";proto=https")
	return b.String()
}

// quoteIfNeeded quotes v as an RFC 7230 quoted-string unless it is a token.
func quoteIfNeeded(v string) string {
	token := true
	for i := 0; i < len(v); i++ {
		if !isTokenChar(v[i]) {
			token = false
			break
		}
	}
	if token {
		return v
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		if v[i] == '"' || v[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(v[i])
	}
	b.WriteByte('"')
	return b.String()
}

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// trusted reports whether addr is inside one of prefixes.
func trusted(prefixes []netip.Prefix, addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
