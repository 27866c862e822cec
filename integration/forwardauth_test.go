package integration

// Issue #14: forward auth (--auth-url) against a small auth service of the
// test's own.

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// authService admits the cookie session=good as alice, answers a bad
// bearer token 401, /admin 403, and everyone else a redirect to a login
// page. It records what it was asked.
type authService struct {
	*httptest.Server
	mu   sync.Mutex
	seen []*http.Request
	mode string // "" normal, "broken": 500
}

func newAuthService(t *testing.T) *authService {
	a := &authService{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.seen = append(a.seen, r)
		mode := a.mode
		a.mu.Unlock()
		uri := r.Header.Get("X-Forwarded-Uri")
		switch {
		case mode == "broken":
			http.Error(w, "oops", http.StatusInternalServerError)
		case r.Header.Get("Authorization") == "Bearer bad":
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			http.Error(w, "bad token", http.StatusUnauthorized)
		case strings.HasPrefix(uri, "/admin"):
			http.Error(w, "admins only", http.StatusForbidden)
		case strings.Contains(r.Header.Get("Cookie"), "session=good"):
			w.Header().Set("X-User", "alice")
			w.Header().Set("X-Email", "alice@example.com")
			w.Header().Set("X-Internal", "not for the app")
			w.WriteHeader(http.StatusNoContent)
		default:
			w.Header().Set("Set-Cookie", "rd="+uri+"; Path=/")
			http.Redirect(w, r, "https://login.example/?rd="+uri, http.StatusFound)
		}
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *authService) last() *http.Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seen[len(a.seen)-1]
}

func TestForwardAuth(t *testing.T) {
	skipShort(t)
	t.Parallel()
	auth := newAuthService(t)
	e := startProxy(t, "--auth-url", auth.URL+"/check", "--auth-copy-headers", "X-User,X-Email")

	do := func(method, path string, hdr ...string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "https://app.example"+path, strings.NewReader("body"))
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := e.h2.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}

	// Admitted: the app gets the auth service's identity, never the
	// client's forged one, and nothing the service did not name.
	resp, body := do(http.MethodPost, "/echo?x=1", "Cookie", "session=good", "X-User", "mallory", "X-Email", "m@evil")
	if resp.StatusCode != 200 {
		t.Fatalf("admitted POST = %d: %s", resp.StatusCode, body)
	}
	for _, want := range []string{`"X-User": [` + "\n" + `      "alice"`, `"alice@example.com"`, `"body_bytes": 4`} {
		if !strings.Contains(body, want) {
			t.Errorf("app's view lacks %q:\n%s", want, body)
		}
	}
	for _, bad := range []string{"mallory", "m@evil", "X-Internal"} {
		if strings.Contains(body, bad) {
			t.Errorf("app saw %q:\n%s", bad, body)
		}
	}
	got := auth.last()
	if got.Method != http.MethodPost || got.Header.Get("X-Forwarded-Uri") != "/echo?x=1" || got.Header.Get("X-Original-Uri") != "/echo?x=1" ||
		got.Header.Get("X-Forwarded-Method") != "POST" || got.Header.Get("Cookie") != "session=good" || got.ContentLength > 0 {
		t.Errorf("auth service asked %s %s, headers %v, length %d; want POST /check with the URI, method, cookie and no body",
			got.Method, got.URL, got.Header, got.ContentLength)
	}
	if got.Header.Get("X-User") != "" {
		t.Errorf("auth service was sent the client's X-User %q", got.Header.Get("X-User"))
	}

	// Refusals go back as the auth service gave them; the app sees none.
	for _, tc := range []struct {
		name, path string
		hdr        []string
		code       int
		header     string
		value      string
	}{
		{"login redirect", "/private", nil, http.StatusFound, "Location", "https://login.example/?rd=/private"},
		{"bad token", "/echo", []string{"Authorization", "Bearer bad"}, http.StatusUnauthorized, "Www-Authenticate", `Bearer error="invalid_token"`},
		{"forbidden", "/admin/users", []string{"Cookie", "session=good"}, http.StatusForbidden, "Content-Type", "text/plain; charset=utf-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(http.MethodGet, tc.path, tc.hdr...)
			if resp.StatusCode != tc.code || resp.Header.Get(tc.header) != tc.value {
				t.Errorf("%s = %d %s: %q, want %d %q", tc.path, resp.StatusCode, tc.header, resp.Header.Get(tc.header), tc.code, tc.value)
			}
			if tc.code == http.StatusForbidden && body != "admins only\n" {
				t.Errorf("403 body = %q, want the auth service's", body)
			}
		})
	}
	var seen []struct{ Path string }
	getJSON(t, plainClient, "http://"+e.app.addr("addr")+"/-/seen", &seen)
	for _, s := range seen {
		if s.Path != "/echo" && !strings.HasPrefix(s.Path, "/-/") {
			t.Errorf("the app saw %s, which the auth service refused", s.Path)
		}
	}

	// An auth service that fails, or is gone, fails closed.
	auth.mu.Lock()
	auth.mode = "broken"
	auth.mu.Unlock()
	if resp, _ := do(http.MethodGet, "/echo", "Cookie", "session=good"); resp.StatusCode != 503 {
		t.Errorf("auth service answering 500: %d, want 503", resp.StatusCode)
	}
	auth.Close()
	if resp, _ := do(http.MethodGet, "/echo", "Cookie", "session=good"); resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("auth service down: %d, want 503 with Retry-After", resp.StatusCode)
	}
	m := metricsText(t, e.admin)
	for result, want := range map[string]float64{"allowed": 1, "denied": 2, "redirected": 1, "error": 2} {
		if v := metricValue(m, `outrider_proxy_auth_requests_total{result="`+result+`"}`); v != want {
			t.Errorf("auth_requests_total{%s} = %v, want %v", result, v, want)
		}
	}
}
