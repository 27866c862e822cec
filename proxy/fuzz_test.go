package proxy

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

// The proxy parses outside input in three places: the client's forwarding
// headers (kept from trusted proxies), the app's Location/Refresh/Set-Cookie
// headers and the client's WebDAV Destination (legacy rewrites), and the
// --upstream/--trusted-proxies flags. Seeds live in testdata/fuzz.

// unquote reverses quoteIfNeeded's quoted-string.
func unquote(s string) string {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return s
	}
	var b strings.Builder
	for i := 1; i < len(s)-1; i++ {
		if s[i] == '\\' && i+1 < len(s)-1 {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// FuzzForwarded: from an untrusted peer nothing the client sent survives;
// from a trusted one the prior values are kept in front; the Forwarded
// element this hop adds always round-trips the host.
func FuzzForwarded(f *testing.F) {
	f.Add("127.0.0.1", "app.example", "6.6.6.6", "for=6.6.6.6;proto=http", "http", "evil.example", false)
	f.Add("::1", "app.example:8443", "", "", "", "", true)
	f.Add("::ffff:10.0.0.1", `we"ird\host`, "1.1.1.1, 2.2.2.2", "for=\"[::1]\"", "https", "x", true)
	f.Fuzz(func(t *testing.T, clientIP, host, xff, fwd, proto, xfh string, isTrusted bool) {
		client, err := netip.ParseAddr(clientIP)
		if err != nil {
			return
		}
		in := http.Header{}
		if xff != "" {
			in.Set("X-Forwarded-For", xff)
		}
		if fwd != "" {
			in.Set("Forwarded", fwd)
		}
		if proto != "" {
			in.Set("X-Forwarded-Proto", proto)
		}
		if xfh != "" {
			in.Set("X-Forwarded-Host", xfh)
		}
		for _, v := range []string{host, xff, fwd, proto, xfh} {
			if !validValue(v) || strings.TrimSpace(v) != v {
				return // net/http refuses or trims such values before the handler
			}
		}
		out := setForwarded(in, client, host, isTrusted)
		ip := client.Unmap().String()
		elem := forwardedElement(ip, client.Unmap().Is6(), host)
		if got := out.Get("Forwarded"); !strings.HasSuffix(got, elem) {
			t.Fatalf("Forwarded %q does not end with this hop's element %q", got, elem)
		}
		if !isTrusted {
			want := map[string]string{"X-Forwarded-For": ip, "X-Forwarded-Proto": "https", "X-Forwarded-Host": host, "Forwarded": elem}
			for k, v := range want {
				if got := out.Get(k); got != v {
					t.Fatalf("untrusted peer: %s = %q, want %q", k, got, v)
				}
			}
		} else if xff != "" && out.Get("X-Forwarded-For") != xff+", "+ip {
			t.Fatalf("trusted peer: X-Forwarded-For = %q, want %q", out.Get("X-Forwarded-For"), xff+", "+ip)
		}
		// host= round-trips through the quoted-string.
		if host != "" {
			i := strings.Index(elem, ";host=")
			j := strings.LastIndex(elem, ";proto=https")
			if i < 0 || j < i {
				t.Fatalf("element %q has no host", elem)
			}
			if got := unquote(elem[i+len(";host=") : j]); got != host {
				t.Fatalf("host %q came back as %q from %q", host, got, elem)
			}
		}
	})
}

// FuzzLegacyRewrites: a rewritten Location keeps everything after the host
// and points at the public https origin; anything not rewritten is left
// byte for byte; a cookie given Secure has it exactly once; a Destination
// is only ever turned from https to http for the public host.
func FuzzLegacyRewrites(f *testing.F) {
	f.Add("http://app.example/login?x=1", "app.example", "127.0.0.1:8080", "sid=1; Path=/", "https://app.example/new")
	f.Add("http://localhost:8080/z#f", "app.example:443", "127.0.0.1:8080", "a=b; secure", "https://other.example/x")
	f.Add("HTTP://[::1]:8080?q", "app.example", "[::1]:8080", "c=d; SameSite=Lax; Secure=", "HTTPS://APP.EXAMPLE")
	f.Add("5; url='http://app.example/next'", "app.example", "127.0.0.1:80", "", "")
	f.Fuzz(func(t *testing.T, loc, public, upstream, cookie, dest string) {
		if nv, ok := rewriteURL(loc, public, upstream); ok {
			end := strings.IndexAny(loc[len("http://"):], "/?#")
			suffix := ""
			if end >= 0 {
				suffix = loc[len("http://")+end:]
			}
			if want := "https://" + httpsHost(public) + suffix; nv != want {
				t.Fatalf("rewriteURL(%q, %q, %q) = %q, want %q", loc, public, upstream, nv, want)
			}
		}
		if nv, ok := rewriteRefresh(loc, public, upstream); ok {
			i := 0
			for !strings.EqualFold(loc[i:i+4], "url=") {
				i++
			}
			if !strings.HasPrefix(nv, loc[:i+4]+"https://") {
				t.Fatalf("rewriteRefresh(%q) = %q: prefix changed", loc, nv)
			}
		}
		h := http.Header{}
		h.Set("Location", loc)
		h["Set-Cookie"] = []string{cookie}
		rewriteResponse(h, AllRewrites, public, upstream)
		if c := h["Set-Cookie"][0]; !hasCookieAttr(c, "secure") {
			t.Fatalf("Set-Cookie %q became %q without Secure", cookie, c)
		} else if c != cookie && c != cookie+"; Secure" {
			t.Fatalf("Set-Cookie %q became %q", cookie, c)
		}
		if got := rewriteDestination(dest, public); got != dest && !strings.HasPrefix(got, "http://") {
			t.Fatalf("Destination %q became %q", dest, got)
		}
	})
}

// FuzzParseUpstream: without --allow-remote-upstream, whatever parses dials
// a unix socket or a loopback address.
func FuzzParseUpstream(f *testing.F) {
	for _, s := range []string{"http://127.0.0.1:8080", "unix:///run/app.sock", "http://localhost/prefix/", "http://[::1]:1",
		"http://192.0.2.1", "https://127.0.0.1", "http://127.0.0.1.nip.io", "http://user@127.0.0.1", "http://0x7f.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		up, err := ParseUpstream(raw, false)
		if err != nil {
			return
		}
		switch up.Network {
		case "unix":
		case "tcp":
			host := up.Address[:strings.LastIndexByte(up.Address, ':')]
			if !isLoopback(strings.Trim(host, "[]")) {
				t.Fatalf("ParseUpstream(%q) dials %s, not loopback", raw, up.Address)
			}
		default:
			t.Fatalf("ParseUpstream(%q): network %q", raw, up.Network)
		}
	})
}
