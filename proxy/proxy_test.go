package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/textproto"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestParseUpstream(t *testing.T) {
	tests := []struct {
		in          string
		allowRemote bool
		wantURL     string
		wantNet     string
		wantAddr    string
		wantErr     string
	}{
		{in: "http://127.0.0.1:8080", wantURL: "http://127.0.0.1:8080", wantNet: "tcp", wantAddr: "127.0.0.1:8080"},
		{in: "http://localhost", wantURL: "http://localhost", wantNet: "tcp", wantAddr: "localhost:80"},
		{in: "http://[::1]:9000/base/", wantURL: "http://[::1]:9000/base", wantNet: "tcp", wantAddr: "[::1]:9000"},
		{in: "unix:///run/app.sock", wantURL: "http://localhost", wantNet: "unix", wantAddr: "/run/app.sock"},
		{in: "http://10.0.0.5:8080", wantErr: "not loopback"},
		{in: "http://app.internal:8080", allowRemote: true, wantURL: "http://app.internal:8080", wantNet: "tcp", wantAddr: "app.internal:8080"},
		{in: "https://127.0.0.1:8443", wantErr: "plain HTTP"},
		{in: "", wantErr: "required"},
		{in: "127.0.0.1:8080", wantErr: "want http://"},
		{in: "unix://relative.sock", wantErr: "unix:///"},
		{in: "http://user:pw@127.0.0.1:1", wantErr: "no user"},
		{in: "http://127.0.0.1:80/?q=1", wantErr: "no user, query"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseUpstream(tt.in, tt.allowRemote)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseUpstream(%q) error = %v, want it to contain %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseUpstream(%q): %v", tt.in, err)
			}
			if got.URL.String() != tt.wantURL || got.Network != tt.wantNet || got.Address != tt.wantAddr {
				t.Errorf("ParseUpstream(%q) = %s %s %s, want %s %s %s", tt.in, got.URL, got.Network, got.Address, tt.wantURL, tt.wantNet, tt.wantAddr)
			}
		})
	}
}

func TestSetForwarded(t *testing.T) {
	prior := http.Header{
		"X-Forwarded-For":   {"203.0.113.9", "198.51.100.1"},
		"X-Forwarded-Proto": {"http"},
		"X-Forwarded-Host":  {"front.example"},
		"Forwarded":         {"for=203.0.113.9"},
	}
	tests := []struct {
		name    string
		client  string
		host    string
		trusted bool
		want    http.Header
	}{
		{"untrusted v4", "192.0.2.7", "app.example", false, http.Header{
			"X-Forwarded-For": {"192.0.2.7"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"app.example"}, "X-Real-Ip": {"CLIENT"},
			"Forwarded": {"for=192.0.2.7;host=app.example;proto=https"}}},
		{"untrusted v6 with port in host", "2001:db8::1", "app.example:8443", false, http.Header{
			"X-Forwarded-For": {"2001:db8::1"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"app.example:8443"}, "X-Real-Ip": {"CLIENT"},
			"Forwarded": {`for="[2001:db8::1]";host="app.example:8443";proto=https`}}},
		{"v4-mapped v6 shown as v4", "::ffff:192.0.2.7", "a", false, http.Header{
			"X-Forwarded-For": {"192.0.2.7"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"a"}, "X-Real-Ip": {"CLIENT"},
			"Forwarded": {"for=192.0.2.7;host=a;proto=https"}}},
		{"trusted extends", "10.0.0.2", "app.example", true, http.Header{
			"X-Forwarded-For": {"203.0.113.9, 198.51.100.1, 10.0.0.2"}, "X-Forwarded-Proto": {"http"}, "X-Forwarded-Host": {"front.example"},
			"X-Real-Ip": {"10.0.0.2"},
			"Forwarded": {"for=203.0.113.9, for=10.0.0.2;host=app.example;proto=https"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := setForwarded(prior, netip.MustParseAddr(tt.client), tt.host, tt.trusted)
			if v := tt.want["X-Real-Ip"]; len(v) == 1 && v[0] == "CLIENT" {
				tt.want["X-Real-Ip"] = tt.want["X-Forwarded-For"]
			}
			if d := cmp.Diff(tt.want, out); d != "" {
				t.Errorf("setForwarded mismatch (-want +got):\n%s", d)
			}
		})
	}
}

// setForwarded returns the forwarding headers writeForwarded writes.
func setForwarded(in http.Header, client netip.Addr, host string, trusted bool) http.Header {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	c := client.Unmap()
	writeForwarded(w, in, c.String(), c.Is6(), host, trusted)
	w.WriteString("\r\n")
	w.Flush()
	hdr, err := textproto.NewReader(bufio.NewReader(&b)).ReadMIMEHeader()
	if err != nil {
		panic(err)
	}
	return http.Header(hdr)
}

func TestTrusted(t *testing.T) {
	ps, err := ParsePrefixes([]string{"10.0.0.0/8", "192.0.2.1", "2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]bool{
		"10.1.2.3": true, "192.0.2.1": true, "192.0.2.2": false, "::ffff:10.0.0.1": true, "2001:db8::5": true, "127.0.0.1": false,
	} {
		if got := trusted(ps, netip.MustParseAddr(addr)); got != want {
			t.Errorf("trusted(%s) = %v, want %v", addr, got, want)
		}
	}
	if _, err := ParsePrefixes([]string{"10.0.0.0/33"}); err == nil || !strings.Contains(err.Error(), "10.0.0.0/33") {
		t.Errorf("ParsePrefixes(10.0.0.0/33) error = %v, want it to name the value", err)
	}
}

func TestRewriteResponse(t *testing.T) {
	tests := []struct {
		name string
		in   http.Header
		rw   Rewrites
		want http.Header
	}{
		{"public host", http.Header{"Location": {"http://app.example/login?x=1"}}, AllRewrites,
			http.Header{"Location": {"https://app.example/login?x=1"}}},
		{"public host explicit port 80", http.Header{"Location": {"http://app.example:80/"}}, AllRewrites,
			http.Header{"Location": {"https://app.example/"}}},
		{"upstream address", http.Header{"Content-Location": {"http://127.0.0.1:8080/doc"}}, AllRewrites,
			http.Header{"Content-Location": {"https://app.example/doc"}}},
		{"upstream alias localhost", http.Header{"Location": {"HTTP://localhost:8080"}}, AllRewrites,
			http.Header{"Location": {"https://app.example"}}},
		{"other host untouched", http.Header{"Location": {"http://elsewhere.example/"}}, AllRewrites,
			http.Header{"Location": {"http://elsewhere.example/"}}},
		{"other loopback port untouched", http.Header{"Location": {"http://127.0.0.1:9999/"}}, AllRewrites,
			http.Header{"Location": {"http://127.0.0.1:9999/"}}},
		{"relative untouched", http.Header{"Location": {"/next"}}, AllRewrites, http.Header{"Location": {"/next"}}},
		{"refresh", http.Header{"Refresh": {"0; URL=http://app.example/x"}}, AllRewrites,
			http.Header{"Refresh": {"0; URL=https://app.example/x"}}},
		{"cookies", http.Header{"Set-Cookie": {"a=1; Path=/", "b=2; secure", "c=secure; HttpOnly"}}, AllRewrites,
			http.Header{"Set-Cookie": {"a=1; Path=/; Secure", "b=2; secure", "c=secure; HttpOnly; Secure"}}},
		// Issue found by FuzzLegacyRewrites: invalid UTF-8 before url= panicked.
		{"refresh with invalid UTF-8", http.Header{"Refresh": {"\x85url=http://app.example/"}}, AllRewrites,
			http.Header{"Refresh": {"\x85url=https://app.example/"}}},
		{"off", http.Header{"Location": {"http://app.example/"}, "Set-Cookie": {"a=1"}}, Rewrites{},
			http.Header{"Location": {"http://app.example/"}, "Set-Cookie": {"a=1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rewriteResponse(tt.in, tt.rw, "app.example", "127.0.0.1:8080")
			if d := cmp.Diff(tt.want, tt.in); d != "" {
				t.Errorf("rewriteResponse mismatch (-want +got):\n%s", d)
			}
		})
	}
	t.Run("public host with https port", func(t *testing.T) {
		h := http.Header{"Location": {"http://app.example:8443/a"}}
		rewriteResponse(h, AllRewrites, "app.example:8443", "127.0.0.1:8080")
		if got := h.Get("Location"); got != "https://app.example:8443/a" {
			t.Errorf("Location = %q", got)
		}
	})
}

func TestRewriteDestination(t *testing.T) {
	for in, want := range map[string]string{
		"https://app.example/a/b":   "http://app.example/a/b",
		"https://other.example/a/b": "https://other.example/a/b",
		"/relative":                 "/relative",
	} {
		if got := rewriteDestination(in, "app.example"); got != want {
			t.Errorf("rewriteDestination(%q) = %q, want %q", in, got, want)
		}
	}
	// Issue #11: the default port spelled on one side only.
	for _, tt := range []struct{ dest, host, want string }{
		{"https://app.example:443/a", "app.example", "http://app.example/a"},
		{"https://app.example/a", "app.example:443", "http://app.example/a"},
		{"https://APP.example:443/a?b", "app.example:443", "http://APP.example/a?b"},
		{"https://app.example:8443/a", "app.example", "https://app.example:8443/a"},
	} {
		if got := rewriteDestination(tt.dest, tt.host); got != tt.want {
			t.Errorf("rewriteDestination(%q, %q) = %q, want %q", tt.dest, tt.host, got, tt.want)
		}
	}
}

func TestNameSet(t *testing.T) {
	s := newNameSet([]string{"App.Example", "*.apps.example"})
	for host, want := range map[string]bool{
		"app.example": true, "APP.example:8443": true, "app.example.": true, "x.apps.example": true,
		"apps.example": false, "a.b.apps.example": false, "other.example": false, "": false,
	} {
		if got := s.match(host); got != want {
			t.Errorf("match(%q) = %v, want %v", host, got, want)
		}
	}
	if !newNameSet(nil).match("anything") {
		t.Error("an empty set must match every host")
	}
}

func TestParseRewrites(t *testing.T) {
	got, err := ParseRewrites([]string{"location", "COOKIE"})
	if err != nil || got != (Rewrites{Location: true, Cookie: true}) {
		t.Errorf("ParseRewrites = %+v, %v", got, err)
	}
	if got, err := ParseRewrites(nil); err != nil || got != (Rewrites{}) {
		t.Errorf("ParseRewrites(nil) = %+v, %v; want all off", got, err)
	}
	if _, err := ParseRewrites([]string{"gzip"}); err == nil || !strings.Contains(err.Error(), `"gzip"`) {
		t.Errorf("ParseRewrites(gzip) error = %v", err)
	}
}

func TestClassify(t *testing.T) {
	live := httptest.NewRequest("GET", "/", nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	gone := live.WithContext(ctx)
	dialRefused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	tests := []struct {
		name       string
		err        error
		r          *http.Request
		body       *idleBody
		wantCode   int
		wantReason string
	}{
		{"dial", dialRefused, live, nil, 502, reasonDial},
		{"header timeout", timeoutErr{}, live, nil, 504, reasonTimeout},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), live, nil, 504, reasonTimeout},
		{"client gone", context.Canceled, gone, nil, statusClientClosed, reasonCanceled},
		{"client stalled body", errors.New("x"), live, &idleBody{err: os.ErrDeadlineExceeded}, 408, reasonClientTimeout},
		{"malformed body", errors.New("x"), live, &idleBody{err: errors.New("invalid byte in chunk length")}, 400, reasonClientBody},
		{"body over the limit", errors.New("x"), live, &idleBody{err: &http.MaxBytesError{Limit: 10}}, 413, reasonClientBody},
		{"other", errors.New("malformed HTTP response"), live, nil, 502, reasonProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, reason := classify(tt.err, tt.r, tt.body)
			if code != tt.wantCode || reason != tt.wantReason {
				t.Errorf("classify(%v) = %d %s, want %d %s", tt.err, code, reason, tt.wantCode, tt.wantReason)
			}
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "timeout awaiting response headers" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestConfigValidate(t *testing.T) {
	err := Config{Upstream: "http://10.0.0.1", IdleTimeout: -time.Second, Names: []string{"a/b"}}.Validate()
	for _, want := range []string{"--listen is required", "no certificate source", "not loopback", "idle timeout", `"a/b"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to report %q", err, want)
		}
	}
}

func TestRapidResetGuard(t *testing.T) {
	ci := &connInfo{}
	now := time.Now()
	for i := range resetLimit {
		if ci.noteReset(now) {
			t.Fatalf("closed after %d resets, limit is %d", i+1, resetLimit)
		}
	}
	if !ci.noteReset(now) {
		t.Fatal("not closed past the limit")
	}
	if ci.noteReset(now) {
		t.Error("asked to close twice")
	}
	// A slow trickle over a long connection never trips it.
	ci = &connInfo{}
	for i := range 10 * resetLimit {
		if ci.noteReset(now.Add(time.Duration(i) * resetWindow / 50)) {
			t.Fatalf("trickle of resets closed the connection at %d", i)
		}
	}
}

func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	newMetrics(reg)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
}
