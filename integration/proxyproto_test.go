package integration

// Issue #14: PROXY protocol from a real HAProxy (send-proxy-v2) and from a
// raw v1 header; refused from peers not in --proxy-protocol-from.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Loopback addresses with roles, so that the app can tell them apart: the
// client, and the balancer (HAProxy's source address) in front of outrider.
const (
	clientIP   = "127.0.0.2"
	balancerIP = "127.0.0.3"
)

// clientFrom is clientFor whose connections come from the local address src
// and go to addr.
func clientFrom(src, addr string, e *proxyEnv) *http.Client {
	c := clientFor(addr, e.ca.Pool(), false)
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c.Transport.(*http.Transport).DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	}
	return c
}

// echoVia GETs /echo with c and returns what the app saw.
func echoVia(t *testing.T, c *http.Client) echo {
	t.Helper()
	var got echo
	if code := getJSON(t, c, "https://app.example/echo", &got); code != 200 {
		t.Fatalf("GET /echo = %d", code)
	}
	return got
}

// accessLogFor returns the remote_addr of the first access-log line for
// path on the given scheme's listener.
func accessLogFor(t *testing.T, p *proc, scheme, path string) string {
	t.Helper()
	line := p.waitLog(10*time.Second, `"scheme":"`+scheme+`","method":"GET","host":"app.example","path":"`+path+`"`)
	var v struct {
		RemoteAddr string `json:"remote_addr"`
	}
	if err := json.Unmarshal([]byte(line), &v); err != nil {
		t.Fatalf("access log line %q: %v", line, err)
	}
	return v.RemoteAddr
}

// startHAProxy runs Debian's HAProxy in TCP mode with one frontend per
// backend address: each passes connections to its backend from
// balancerIP, opening them with PROXY protocol (send-proxy-v2 or
// send-proxy). It returns the frontends' addresses.
func startHAProxy(t *testing.T, sendProxy string, backends ...string) []string {
	t.Helper()
	bin := needTool(t, "haproxy")
	var cfg strings.Builder
	cfg.WriteString("global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n")
	var fronts []string
	for i, b := range backends {
		front := fmt.Sprintf("127.0.0.1:%d", pickPort(t))
		fronts = append(fronts, front)
		fmt.Fprintf(&cfg, "frontend f%d\n  bind %s\n  default_backend b%d\nbackend b%d\n  server o %s %s source %s\n",
			i, front, i, i, b, sendProxy, balancerIP)
	}
	file := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(file, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	start(t, procSpec{name: "haproxy", bin: bin, args: []string{"-db", "-f", file}, noReady: true,
		exitCode: -1}) // HAProxy dies of the SIGINT that stops it
	for _, f := range fronts {
		waitFor(t, 10*time.Second, func() error {
			c, err := net.Dial("tcp", f)
			if err == nil {
				c.Close()
			}
			return err
		})
	}
	return fronts
}

func TestProxyProtocolV2FromHAProxy(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t, "--proxy-protocol-from", balancerIP+"/32")
	fronts := startHAProxy(t, "send-proxy-v2", e.https, e.http)

	// HTTPS through HAProxy: the app and the access log see the client.
	c := clientFrom(clientIP, fronts[0], e)
	got := echoVia(t, c)
	if xff := got.Header["X-Forwarded-For"]; len(xff) != 1 || xff[0] != clientIP {
		t.Errorf("X-Forwarded-For = %q, want %q (the client, not HAProxy at %s)", xff, clientIP, balancerIP)
	}
	if fwd := got.Header["Forwarded"]; len(fwd) != 1 || !strings.HasPrefix(fwd[0], "for="+clientIP+";") {
		t.Errorf("Forwarded = %q, want for=%s", fwd, clientIP)
	}
	if ra := accessLogFor(t, e.px, "https", "/echo"); !strings.HasPrefix(ra, clientIP+":") {
		t.Errorf("access log remote_addr = %q, want %s:port", ra, clientIP)
	}

	// Plain HTTP through HAProxy: the 308's log line names the client too.
	resp, err := clientFrom(clientIP, fronts[1], e).Get("http://app.example/plain")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusPermanentRedirect {
		t.Errorf("GET http:// via HAProxy = %d, want 308", resp.StatusCode)
	}
	if ra := accessLogFor(t, e.px, "http", "/plain"); !strings.HasPrefix(ra, clientIP+":") {
		t.Errorf("plain-HTTP access log remote_addr = %q, want %s:port", ra, clientIP)
	}

	// Straight to outrider, not through the balancer: no header is needed
	// from an untrusted peer, and its own address is used.
	if xff := echoVia(t, clientFrom(clientIP, e.https, e)).Header["X-Forwarded-For"]; len(xff) != 1 || xff[0] != clientIP {
		t.Errorf("direct X-Forwarded-For = %q, want %q", xff, clientIP)
	}
	m := metricsText(t, e.admin)
	if v := metricValue(m, `outrider_proxy_proxy_protocol_connections_total{result="used"}`); v < 2 {
		t.Errorf("proxy_protocol_connections_total{used} = %v, want ≥ 2\n%s", v, m)
	}
}

// metricsText returns the admin /metrics page.
func metricsText(t *testing.T, admin string) string {
	t.Helper()
	_, body, _ := get(t, plainClient, "http://"+admin+"/metrics")
	return body
}

// rawTLS dials outrider's HTTPS address from src, writes header first (a
// PROXY line, or nothing), then speaks TLS and asks GET /echo over
// HTTP/1.1. It returns what the app saw, or the error (a status other
// than 200 is one).
func rawTLS(e *proxyEnv, src, header string) (echo, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	raw, err := d.Dial("tcp", e.https)
	if err != nil {
		return echo{}, err
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(raw, header); err != nil {
		return echo{}, err
	}
	tc := tls.Client(raw, &tls.Config{ServerName: "app.example", RootCAs: e.ca.Pool(), NextProtos: []string{"http/1.1"}})
	if err := tc.Handshake(); err != nil {
		return echo{}, err
	}
	io.WriteString(tc, "GET /echo HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		return echo{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return echo{}, fmt.Errorf("status %d", resp.StatusCode)
	}
	var got echo
	return got, json.NewDecoder(resp.Body).Decode(&got)
}

func TestProxyProtocolV1RawHeader(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t, "--proxy-protocol-from", "127.0.0.1", "--proxy-protocol-from", "::1/128")
	for _, tc := range []struct {
		name, src, header, wantXFF, wantForwarded string
	}{
		{"v4 header", "127.0.0.1", "PROXY TCP4 127.9.8.7 127.0.0.1 4321 443\r\n", "127.9.8.7", "for=127.9.8.7;"},
		{"v6 header", "127.0.0.1", "PROXY TCP6 ::1 ::1 4321 443\r\n", "::1", `for="[::1]";`},
		{"trusted peer, no header", "127.0.0.1", "", "127.0.0.1", "for=127.0.0.1;"},
		{"UNKNOWN keeps the peer's address", "127.0.0.1", "PROXY UNKNOWN\r\n", "127.0.0.1", "for=127.0.0.1;"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := rawTLS(e, tc.src, tc.header)
			if err != nil {
				t.Fatal(err)
			}
			if xff := got.Header["X-Forwarded-For"]; len(xff) != 1 || xff[0] != tc.wantXFF {
				t.Errorf("X-Forwarded-For = %q, want %q", xff, tc.wantXFF)
			}
			if fwd := got.Header["Forwarded"]; len(fwd) != 1 || !strings.HasPrefix(fwd[0], tc.wantForwarded) {
				t.Errorf("Forwarded = %q, want prefix %q", fwd, tc.wantForwarded)
			}
		})
	}

	// From a peer not in --proxy-protocol-from a header is refused: the
	// connection closes before any TLS.
	if _, err := rawTLS(e, clientIP, "PROXY TCP4 127.9.8.7 127.0.0.1 4321 443\r\n"); err == nil {
		t.Error("a PROXY header from an untrusted peer was accepted")
	}
	// A malformed header from a trusted peer is refused as well.
	if _, err := rawTLS(e, "127.0.0.1", "PROXY TCP4 nonsense\r\n"); err == nil {
		t.Error("a malformed PROXY header was accepted")
	}
	m := metricsText(t, e.admin)
	for series, want := range map[string]float64{
		`outrider_proxy_proxy_protocol_connections_total{result="used"}`:    3, // UNKNOWN too
		`outrider_proxy_proxy_protocol_connections_total{result="absent"}`:  1,
		`outrider_proxy_proxy_protocol_connections_total{result="refused"}`: 1,
		`outrider_proxy_proxy_protocol_connections_total{result="invalid"}`: 1,
	} {
		if v := metricValue(m, series); v != want {
			t.Errorf("%s = %v, want %v", series, v, want)
		}
	}

	// The plain-HTTP listener reads the header too.
	c, err := net.Dial("tcp", e.http)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "PROXY TCP4 127.9.8.6 127.0.0.1 4321 80\r\nGET /v1plain HTTP/1.1\r\nHost: app.example\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusPermanentRedirect {
		t.Errorf("plain GET after a v1 header = %d, want 308", resp.StatusCode)
	}
	if ra := accessLogFor(t, e.px, "http", "/v1plain"); ra != "127.9.8.6:4321" {
		t.Errorf("plain-HTTP access log remote_addr = %q, want 127.9.8.6:4321", ra)
	}
}
