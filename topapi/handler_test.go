package topapi

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// newTestServer serves a Handler over a fixture sampler with two samples
// taken, behind the token "s3cret".
func newTestServer(t *testing.T) *httptest.Server {
	t.Helper()
	f := newFixture(t)
	s := f.sampler(f.config())
	twoSamples(t, f, s)
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600)
	h, err := NewHandler(HandlerConfig{Sampler: s, TokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/top", h)
	mux.Handle("/top/", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestHandler(t *testing.T) {
	srv := newTestServer(t)
	const good = "Bearer s3cret"
	tests := []struct {
		name, method, path, auth, accept string
		wantCode                         int
		wantType                         string
		wantBody                         []string // substrings
		wantHeader                       map[string]string
	}{
		{name: "no token", path: "/top", wantCode: 401, wantBody: []string{"bearer token"},
			wantHeader: map[string]string{"WWW-Authenticate": `Bearer realm="outrider top"`}},
		{name: "wrong token", path: "/top", auth: "Bearer nope", wantCode: 401,
			wantHeader: map[string]string{"WWW-Authenticate": `Bearer realm="outrider top", error="invalid_token"`}},
		{name: "token as prefix", path: "/top", auth: "Bearer s3cretX", wantCode: 401},
		{name: "basic scheme", path: "/top", auth: "Basic czNjcmV0", wantCode: 401},
		{name: "json", path: "/top", auth: good, wantCode: 200, wantType: "application/json",
			wantBody: []string{`"source": "cgroup"`, `"--db-password=***"`, `"cpu_percent": 200`}},
		{name: "scheme case-insensitive", path: "/top", auth: "bearer s3cret", wantCode: 200},
		{name: "text", path: "/top", auth: good, accept: "text/plain", wantCode: 200, wantType: "text/plain; charset=utf-8",
			wantBody: []string{"PID", "%CPU", "--db-password=***", "[kworker/0:1]", "[cgroup figures]"}},
		{name: "html without token", path: "/top", accept: "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8", wantCode: 200,
			wantType: "text/html; charset=utf-8", wantBody: []string{"<table", "sessionStorage"}},
		{name: "json preferred by q", path: "/top", auth: good, accept: "text/html;q=0.5, application/json", wantCode: 200, wantType: "application/json"},
		{name: "bad sort", path: "/top?sort=name", auth: good, wantCode: 400, wantBody: []string{`bad sort "name": want cpu, mem or pid`}},
		{name: "bad limit", path: "/top?limit=abc", auth: good, wantCode: 400, wantBody: []string{`bad limit "abc"`}},
		{name: "zero limit", path: "/top?limit=0", auth: good, wantCode: 400},
		{name: "bad query needs token first", path: "/top?limit=abc", wantCode: 401},
		{name: "openapi", path: "/top/openapi.json", auth: good, wantCode: 200, wantType: "application/json", wantBody: []string{`"openapi": "3.1.0"`}},
		{name: "openapi needs token", path: "/top/openapi.json", wantCode: 401},
		{name: "post", method: "POST", path: "/top", auth: good, wantCode: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = "GET"
			}
			req, _ := http.NewRequest(method, srv.URL+tt.path, nil)
			req.Header.Set("Origin", "https://evil.example")
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			if tt.accept != "" {
				req.Header.Set("Accept", tt.accept)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			body := string(b)
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("%s %s = %d, want %d; body %q", method, tt.path, resp.StatusCode, tt.wantCode, body)
			}
			if tt.wantType != "" && resp.Header.Get("Content-Type") != tt.wantType {
				t.Errorf("Content-Type = %q, want %q", resp.Header.Get("Content-Type"), tt.wantType)
			}
			for _, s := range tt.wantBody {
				if !strings.Contains(body, s) {
					t.Errorf("body does not contain %q:\n%s", s, body)
				}
			}
			for k, v := range tt.wantHeader {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			for k := range resp.Header {
				if strings.HasPrefix(k, "Access-Control-") {
					t.Errorf("CORS header %s set; want none", k)
				}
			}
			if tt.wantCode >= 400 && strings.Count(strings.TrimSpace(body), "\n") > 0 {
				t.Errorf("error body %q is not one line", body)
			}
			for _, secret := range []string{"hunter2", "s3cr3t", ":pw@"} {
				if strings.Contains(body, secret) {
					t.Errorf("body leaks %q", secret)
				}
			}
		})
	}
}

func TestHandlerSortAndLimit(t *testing.T) {
	srv := newTestServer(t)
	tests := []struct {
		query string
		want  []int
	}{
		{"", []int{200, 100, 1, 300}},
		{"?sort=cpu&limit=2", []int{200, 100}},
		{"?sort=mem", []int{100, 1, 200, 300}},
		{"?sort=pid&limit=3", []int{1, 100, 200}},
		{"?limit=99", []int{200, 100, 1, 300}},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest("GET", srv.URL+"/top"+tt.query, nil)
		req.Header.Set("Authorization", "Bearer s3cret")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var snap Snapshot
		err = json.NewDecoder(resp.Body).Decode(&snap)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("GET /top%s: decoding: %v", tt.query, err)
		}
		var got []int
		for _, p := range snap.Processes {
			got = append(got, p.PID)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("GET /top%s PIDs (-want +got):\n%s", tt.query, diff)
		}
	}
}

func TestHandlerPageHasNoDataAndStrictCSP(t *testing.T) {
	srv := newTestServer(t)
	req, _ := http.NewRequest("GET", srv.URL+"/top", nil)
	req.Header.Set("Accept", "text/html")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}
	for _, leak := range []string{"python3", "fixturehost", "worker"} {
		if strings.Contains(string(b), leak) {
			t.Errorf("page served without a token contains %q", leak)
		}
	}
	for _, ext := range []string{"src=\"http", "href=\"http", "@import", "//cdn"} {
		if strings.Contains(string(b), ext) {
			t.Errorf("page references an external asset (%q)", ext)
		}
	}
}

func TestHandlerReloadKeepsTokenOnFailure(t *testing.T) {
	f := newFixture(t)
	s := f.sampler(f.config())
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("one"), 0o600)
	h, err := NewHandler(HandlerConfig{Sampler: s, TokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(tokenFile, []byte(""), 0o600)
	if err := h.Reload(t.Context()); err == nil {
		t.Error("Reload of an empty token file succeeded; want an error")
	}
	r := httptest.NewRequest("GET", "/top/openapi.json", nil)
	r.Header.Set("Authorization", "Bearer one")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 {
		t.Errorf("old token after failed reload: %d, want 200", w.Code)
	}
}

func TestMetricsLint(t *testing.T) {
	f := newFixture(t)
	reg := prometheus.NewPedanticRegistry()
	cfg := f.config()
	cfg.Registerer = reg
	cfg.TopN = 2
	twoSamples(t, f, f.sampler(cfg))
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
	if n := testutil.CollectAndCount(reg, "outrider_top_process_cpu_seconds_total"); n != 2 {
		t.Errorf("%d per-process CPU series, want TopN = 2", n)
	}
	const want = `
# HELP outrider_top_process_cpu_seconds_total CPU time of one of the top N processes by CPU, in seconds.
# TYPE outrider_top_process_cpu_seconds_total counter
outrider_top_process_cpu_seconds_total{name="app server",pid="100"} 13
outrider_top_process_cpu_seconds_total{name="worker",pid="200"} 4.1
# HELP outrider_top_cpu_limit_cores CPU available in cores: the cgroup quota in a container, else the number of CPUs.
# TYPE outrider_top_cpu_limit_cores gauge
outrider_top_cpu_limit_cores 1.5
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "outrider_top_process_cpu_seconds_total", "outrider_top_cpu_limit_cores"); err != nil {
		t.Error(err)
	}
}
