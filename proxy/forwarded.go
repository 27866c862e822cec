package proxy

import (
	"bufio"
	"bytes"
	"net/http"
	"net/netip"
	"strings"
)

// forwardingHeaders are the request headers outrider sets itself. What a
// client sends in them is dropped, unless the peer is a trusted proxy, whose
// values are kept and extended.
func isForwardingHeader(k string) bool {
	switch k {
	case "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded", "X-Real-Ip":
		return true
	}
	return false
}

// clientIP returns the client address of a RemoteAddr ("ip:port" or
// "[ip]:port") as printed, unmapped, and whether it is IPv6.
func clientIP(remoteAddr string) (netip.Addr, string, bool) {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return netip.Addr{}, remoteAddr, false
	}
	a := ap.Addr()
	if a.Is4In6() {
		a = a.Unmap()
		return a, a.String(), false
	}
	host := remoteAddr[:strings.LastIndexByte(remoteAddr, ':')]
	return a, strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), a.Is6()
}

// writeForwarded writes X-Forwarded-For, -Proto, -Host, X-Real-IP and
// Forwarded (RFC 7239) for a client reaching us over HTTPS. in is consulted
// only when the peer is trusted: its values are kept in front of ours.
func writeForwarded(w *bufio.Writer, in http.Header, ip string, v6 bool, host string, trusted bool) {
	w.WriteString("X-Forwarded-For: ")
	if prior := in["X-Forwarded-For"]; trusted && len(prior) > 0 {
		for _, p := range prior {
			w.WriteString(p)
			w.WriteString(", ")
		}
	}
	w.WriteString(ip)
	w.WriteString("\r\nX-Forwarded-Proto: ")
	if prior := in.Get("X-Forwarded-Proto"); trusted && prior != "" {
		w.WriteString(prior)
	} else {
		w.WriteString("https")
	}
	w.WriteString("\r\nX-Forwarded-Host: ")
	if prior := in.Get("X-Forwarded-Host"); trusted && prior != "" {
		w.WriteString(prior)
	} else {
		w.WriteString(host)
	}
	w.WriteString("\r\nX-Real-Ip: ")
	if prior := in.Get("X-Real-Ip"); trusted && prior != "" {
		w.WriteString(prior)
	} else {
		w.WriteString(ip)
	}
	w.WriteString("\r\nForwarded: ")
	if prior := in["Forwarded"]; trusted && len(prior) > 0 {
		for _, p := range prior {
			w.WriteString(p)
			w.WriteString(", ")
		}
	}
	writeForwardedElement(w, ip, v6, host)
	w.WriteString("\r\n")
}

// writeForwardedElement writes this hop's RFC 7239 forwarded-element. IPv6
// addresses and hosts that are not tokens (a port's colon) are quoted.
func writeForwardedElement(w *bufio.Writer, ip string, v6 bool, host string) {
	w.WriteString("for=")
	if v6 {
		w.WriteString(`"[`)
		w.WriteString(ip)
		w.WriteString(`]"`)
	} else {
		w.WriteString(ip)
	}
	if host != "" {
		w.WriteString(";host=")
		writeQuotedIfNeeded(w, host)
	}
	w.WriteString(";proto=https")
}

// forwardedElement returns what writeForwardedElement writes.
func forwardedElement(ip string, v6 bool, host string) string {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	writeForwardedElement(w, ip, v6, host)
	w.Flush()
	return b.String()
}

// writeQuotedIfNeeded writes v as an RFC 9110 quoted-string unless it is a
// token.
func writeQuotedIfNeeded(w *bufio.Writer, v string) {
	if validName(v) {
		w.WriteString(v)
		return
	}
	w.WriteByte('"')
	for i := 0; i < len(v); i++ {
		if v[i] == '"' || v[i] == '\\' {
			w.WriteByte('\\')
		}
		w.WriteByte(v[i])
	}
	w.WriteByte('"')
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
