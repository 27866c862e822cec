package proxy

import (
	"net/http"
	"net/netip"
	"strings"
)

// setForwarded sets X-Forwarded-For, -Proto, -Host and Forwarded (RFC 7239)
// on out. ReverseProxy has already removed whatever the client sent on out;
// in is consulted only when the peer is a trusted proxy, whose headers are
// kept and extended. The four values share one backing array.
func setForwarded(out, in http.Header, client netip.Addr, host string, trusted bool) {
	ip := client.Unmap().String()
	v := make([]string, 4)
	v[0], v[1], v[2], v[3] = ip, "https", host, forwardedElement(client, ip, host)
	if trusted {
		if prior := in.Values("X-Forwarded-For"); len(prior) > 0 {
			v[0] = strings.Join(prior, ", ") + ", " + ip
		}
		if prior := in.Get("X-Forwarded-Proto"); prior != "" {
			v[1] = prior
		}
		if prior := in.Get("X-Forwarded-Host"); prior != "" {
			v[2] = prior
		}
		if prior := in.Values("Forwarded"); len(prior) > 0 {
			v[3] = strings.Join(prior, ", ") + ", " + v[3]
		}
	}
	out["X-Forwarded-For"] = v[0:1:1]
	out["X-Forwarded-Proto"] = v[1:2:2]
	out["X-Forwarded-Host"] = v[2:3:3]
	out["Forwarded"] = v[3:4:4]
}

// forwardedElement builds one RFC 7239 forwarded-element for a client
// reaching us over HTTPS. IPv6 addresses and hosts with a port are quoted.
// ip is client as printed.
func forwardedElement(client netip.Addr, ip, host string) string {
	if client.Unmap().Is6() {
		ip = `"[` + ip + `]"`
	}
	if host == "" {
		return "for=" + ip + ";proto=https"
	}
	return "for=" + ip + ";host=" + quoteIfNeeded(host) + ";proto=https"
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
