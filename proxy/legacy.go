package proxy

import (
	"net/http"
	"strings"
)

// rewriteResponse applies the legacy-app fixes to a response from the app.
// publicHost is the Host the client asked for; upstreamHost is the app's own
// host:port as the app might spell it in absolute URLs.
func rewriteResponse(h http.Header, rw Rewrites, publicHost, upstreamHost string) {
	if rw.Location {
		for _, name := range []string{"Location", "Content-Location"} {
			if v := h.Get(name); v != "" {
				if nv, ok := rewriteURL(v, publicHost, upstreamHost); ok {
					h.Set(name, nv)
				}
			}
		}
		if v := h.Get("Refresh"); v != "" {
			if nv, ok := rewriteRefresh(v, publicHost, upstreamHost); ok {
				h.Set("Refresh", nv)
			}
		}
	}
	if rw.Cookie {
		cookies := h["Set-Cookie"]
		for i, c := range cookies {
			if !hasCookieAttr(c, "secure") {
				cookies[i] = c + "; Secure"
			}
		}
	}
}

// rewriteURL turns http://<publicHost>/… or http://<upstreamHost>/… into
// https://<publicHost>/…. Other URLs (relative ones, other hosts) are left
// alone.
func rewriteURL(v, publicHost, upstreamHost string) (string, bool) {
	const scheme = "http://"
	if len(v) < len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return "", false
	}
	rest := v[len(scheme):]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	host := rest[:end]
	if !sameHost(host, httpsHost(publicHost)) && !sameHost(host, upstreamHost) && !isUpstreamAlias(host, upstreamHost) {
		return "", false
	}
	return "https://" + httpsHost(publicHost) + rest[end:], true
}

// rewriteRefresh handles "5; url=http://…".
func rewriteRefresh(v, publicHost, upstreamHost string) (string, bool) {
	// Not strings.ToLower: it can change the length of invalid UTF-8, and
	// the index must fit v.
	i := indexFold(v, "url=")
	if i < 0 {
		return "", false
	}
	u := strings.Trim(v[i+4:], `'" `)
	nu, ok := rewriteURL(u, publicHost, upstreamHost)
	if !ok {
		return "", false
	}
	return v[:i+4] + nu, true
}

// indexFold is strings.Index ignoring ASCII case.
func indexFold(s, substr string) int {
	for i := 0; i+len(substr) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(substr)], substr) {
			return i
		}
	}
	return -1
}

// rewriteDestination turns an inbound WebDAV Destination of
// https://<publicHost>/… into http://<publicHost>/…, the scheme the app
// believes it is served with. The default port :443 may be spelled on
// either side or neither; the rewritten URL carries no port. Anything else
// is returned unchanged.
func rewriteDestination(v, publicHost string) string {
	const scheme = "https://"
	if len(v) < len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return v
	}
	rest := v[len(scheme):]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	host := httpsHost(rest[:end])
	if !strings.EqualFold(host, httpsHost(publicHost)) {
		return v
	}
	return "http://" + host + rest[end:]
}

// sameHost compares hosts case-insensitively, taking an http URL's default
// port 80 as absent.
func sameHost(a, b string) bool {
	return strings.EqualFold(strings.TrimSuffix(a, ":80"), strings.TrimSuffix(b, ":80"))
}

// isUpstreamAlias reports whether host names the upstream by another
// loopback spelling (localhost vs 127.0.0.1) with the same port.
func isUpstreamAlias(host, upstreamHost string) bool {
	hp, up := portOf(host), portOf(upstreamHost)
	if hp != up {
		return false
	}
	h, u := strings.TrimSuffix(host, ":"+hp), strings.TrimSuffix(upstreamHost, ":"+up)
	return isLoopback(strings.Trim(h, "[]")) && isLoopback(strings.Trim(u, "[]"))
}

func portOf(hostport string) string {
	i := strings.LastIndexByte(hostport, ':')
	if i < 0 || strings.Contains(hostport[i:], "]") {
		return "80"
	}
	return hostport[i+1:]
}

// httpsHost drops an explicit :443 from a public host.
func httpsHost(h string) string { return strings.TrimSuffix(h, ":443") }

// hasCookieAttr reports whether a Set-Cookie value carries attribute attr.
func hasCookieAttr(cookie, attr string) bool {
	parts := strings.Split(cookie, ";")
	for _, p := range parts[1:] { // the first part is name=value
		name, _, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(strings.TrimSpace(name), attr) {
			return true
		}
	}
	return false
}
