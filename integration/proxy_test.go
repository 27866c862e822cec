package integration

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outrider-dev/outrider/internal/testcert"
)

// proxyEnv is a running testapp with outrider proxy in front of it.
type proxyEnv struct {
	app, px  *proc
	ca       *testcert.CA
	certFile string
	keyFile  string
	https    string // outrider's HTTPS address
	http     string // its plain-HTTP address, "" when off
	admin    string // its admin address
	h1, h2   *http.Client
}

// startProxy starts the testapp and outrider proxy with a static test
// certificate for app.example, localhost and 127.0.0.1. extra flags are
// appended (later flags win).
func startProxy(t *testing.T, extra ...string) *proxyEnv {
	t.Helper()
	e := &proxyEnv{ca: testcert.NewCA(t)}
	e.certFile, e.keyFile = e.ca.LeafFiles(t, t.TempDir(), "app.example", "localhost", "127.0.0.1")
	e.app = startApp(t)
	args := []string{"proxy",
		"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--upstream", "http://" + e.app.addr("addr"),
		"--cert", e.certFile, "--key", e.keyFile,
	}
	e.px = startOutrider(t, append(args, extra...)...)
	e.https = e.px.addr("https_addr")
	e.http, _ = e.px.ready["http_addr"].(string)
	e.admin = e.px.addr("admin_addr")
	e.h1 = clientFor(e.https, e.ca.Pool(), false)
	e.h2 = clientFor(e.https, e.ca.Pool(), true)
	return e
}

// response is the outcome of a request made in the background.
type response struct {
	code int
	body string
	err  error
	at   time.Time // when the body was read
}

// getAsync GETs url with c in the background.
func getAsync(c *http.Client, url string) <-chan response {
	out := make(chan response, 1)
	go func() {
		resp, err := c.Get(url)
		if err != nil {
			out <- response{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out <- response{code: resp.StatusCode, body: string(b), at: time.Now()}
	}()
	return out
}

// waitAppSaw waits until the app has received a request for path.
func (e *proxyEnv) waitAppSaw(t *testing.T, path string) {
	t.Helper()
	waitFor(t, 10*time.Second, func() error {
		var seen []struct{ Path string }
		getJSON(t, plainClient, "http://"+e.app.addr("addr")+"/-/seen", &seen)
		for _, s := range seen {
			if s.Path == path {
				return nil
			}
		}
		return fmt.Errorf("app has not seen %s", path)
	})
}

// echo is what the testapp's /echo reports.
type echo struct {
	Method           string              `json:"method"`
	Host             string              `json:"host"`
	Path             string              `json:"path"`
	Proto            string              `json:"proto"`
	Header           map[string][]string `json:"header"`
	BodyBytes        int64               `json:"body_bytes"`
	ContentLength    int64               `json:"content_length"`
	TransferEncoding []string            `json:"transfer_encoding"`
}

func TestProxyServesHTTP2AndHTTP1(t *testing.T) {
	skipShort(t)
	e := startProxy(t)
	for _, tc := range []struct {
		name   string
		client *http.Client
		want   string
	}{{"h2", e.h2, "HTTP/2.0"}, {"http/1.1", e.h1, "HTTP/1.1"}} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := tc.client.Get("https://app.example/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Proto != tc.want {
				t.Fatalf("GET / = %d %s, want 200 %s", resp.StatusCode, resp.Proto, tc.want)
			}
			if !strings.Contains(string(body), `X-Forwarded-Proto="https"`) {
				t.Errorf("app did not see X-Forwarded-Proto https: %q", body)
			}
		})
	}
}

func TestTLSPosture(t *testing.T) {
	skipShort(t)
	e := startProxy(t)
	dial := func(cfg *tls.Config) (tls.ConnectionState, error) {
		cfg.RootCAs = e.ca.Pool()
		cfg.ServerName = "app.example"
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.https, cfg)
		if err != nil {
			return tls.ConnectionState{}, err
		}
		defer c.Close()
		return c.ConnectionState(), nil
	}
	t.Run("TLS 1.1 refused", func(t *testing.T) {
		if _, err := dial(&tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}); err == nil {
			t.Fatal("TLS 1.1 handshake succeeded")
		}
	})
	t.Run("CBC suites refused", func(t *testing.T) {
		cbc := []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
			tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA}
		if _, err := dial(&tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: cbc}); err == nil {
			t.Fatal("a CBC-SHA1 suite was accepted")
		}
	})
	t.Run("TLS 1.2 AEAD accepted", func(t *testing.T) {
		cs, err := dial(&tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}})
		if err != nil {
			t.Fatal(err)
		}
		if cs.CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 {
			t.Errorf("suite = %s", tls.CipherSuiteName(cs.CipherSuite))
		}
	})
	t.Run("X25519MLKEM768 and ALPN order", func(t *testing.T) {
		cs, err := dial(&tls.Config{NextProtos: []string{"http/1.1", "h2"}})
		if err != nil {
			t.Fatal(err)
		}
		if cs.Version != tls.VersionTLS13 || cs.CurveID != tls.X25519MLKEM768 {
			t.Errorf("version %x curve %v, want TLS 1.3 with X25519MLKEM768", cs.Version, cs.CurveID)
		}
		if cs.NegotiatedProtocol != "h2" {
			t.Errorf("ALPN = %q, want h2 (server preference)", cs.NegotiatedProtocol)
		}
	})
	t.Run("--tls-min-version 1.3 refuses TLS 1.2", func(t *testing.T) {
		modern := startProxy(t, "--tls-min-version", "1.3")
		c, err := tls.Dial("tcp", modern.https, &tls.Config{RootCAs: e.ca.Pool(), ServerName: "app.example", MaxVersion: tls.VersionTLS12})
		if err == nil {
			c.Close()
			t.Fatal("TLS 1.2 handshake succeeded with --tls-min-version 1.3")
		}
		c, err = tls.Dial("tcp", modern.https, &tls.Config{RootCAs: modern.ca.Pool(), ServerName: "app.example"})
		if err != nil {
			t.Fatalf("TLS 1.3 refused: %v", err)
		}
		c.Close()
	})
	code, metrics, _ := get(t, plainClient, "http://"+e.admin+"/metrics")
	if code != 200 || metricValue(metrics, `outrider_proxy_tls_handshakes_total{result="error"}`) < 2 ||
		metricValue(metrics, `outrider_proxy_tls_handshakes_total{result="success"}`) < 2 {
		t.Errorf("handshake metrics not counted:\n%s", grepLines(metrics, "tls_handshakes"))
	}
}

func TestForwardingHeaders(t *testing.T) {
	skipShort(t)
	spoof := []string{
		"X-Forwarded-For", "6.6.6.6", "X-Forwarded-Host", "evil.example", "X-Forwarded-Proto", "http",
		"Forwarded", "for=6.6.6.6;proto=http", "Connection", "X-Hop", "X-Hop", "secret", "Upgrade", "h2c",
	}
	tests := []struct {
		name  string
		flags []string
		want  map[string]string
	}{
		{"untrusted client headers replaced", nil, map[string]string{
			"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Host": "app.example", "X-Forwarded-Proto": "https",
			"Forwarded": "for=127.0.0.1;host=app.example;proto=https",
		}},
		{"trusted proxy headers extended", []string{"--trusted-proxies", "127.0.0.0/8"}, map[string]string{
			"X-Forwarded-For": "6.6.6.6, 127.0.0.1", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http",
			"Forwarded": "for=6.6.6.6;proto=http, for=127.0.0.1;host=app.example;proto=https",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startProxy(t, tt.flags...)
			var got echo
			getJSON(t, e.h1, "https://app.example/echo", &got, spoof...)
			for k, v := range tt.want {
				if g := strings.Join(got.Header[k], ","); g != v {
					t.Errorf("app saw %s = %q, want %q", k, g, v)
				}
			}
			for _, k := range []string{"X-Hop", "Upgrade"} {
				if v, ok := got.Header[k]; ok {
					t.Errorf("hop-by-hop header %s = %q reached the app", k, v)
				}
			}
			if got.Host != "app.example" {
				t.Errorf("app saw Host %q, want app.example", got.Host)
			}
		})
	}
}

func TestMisdirectedHost(t *testing.T) {
	skipShort(t)
	e := startProxy(t, "--domain", "app.example")
	if code, _, _ := get(t, e.h2, "https://app.example/"); code != 200 {
		t.Errorf("served name: %d, want 200", code)
	}
	code, body, _ := get(t, e.h1, "https://app.example/", "Host", "other.example")
	if code != http.StatusMisdirectedRequest {
		t.Errorf("unserved Host: %d %q, want 421", code, body)
	}
	// An absolute-form target names the host (RFC 9112 §3.2.2); it is held
	// to the same names and never chooses where outrider connects.
	if code := e.rawExchange(t, "GET http://other.example/echo HTTP/1.1\r\nHost: app.example\r\n\r\n"); code != http.StatusMisdirectedRequest {
		t.Errorf("absolute-form to an unserved host: %d, want 421", code)
	}
	c := e.tlsConn(t)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET https://app.example/echo?x=1 HTTP/1.1\r\nHost: app.example\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	var got echo
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if resp.StatusCode != 200 || got.Path != "/echo" || got.Host != "app.example" {
		t.Errorf("absolute-form to a served host: %d, app saw host %q path %q", resp.StatusCode, got.Host, got.Path)
	}
}

// tlsConn opens a raw TLS connection speaking HTTP/1.1.
func (e *proxyEnv) tlsConn(t *testing.T) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", e.https, &tls.Config{RootCAs: e.ca.Pool(), ServerName: "app.example", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// upgrade opens an HTTP/1.1 connection, asks path for a WebSocket upgrade
// (the testapp's /upgrade echoes bytes) and requires a 101.
func (e *proxyEnv) upgrade(t *testing.T, path string) (*tls.Conn, *bufio.Reader) {
	t.Helper()
	c := e.tlsConn(t)
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", path)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade %s: status %d, want 101", path, resp.StatusCode)
	}
	return c, br
}

func TestUpgradeTunnels(t *testing.T) {
	skipShort(t)
	e := startProxy(t)
	c, br := e.upgrade(t, "/upgrade")
	for i := range 3 {
		msg := fmt.Sprintf("ping %d\n", i)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, msg)
		line, err := br.ReadString('\n')
		if err != nil || line != msg {
			t.Fatalf("echo %d = %q, %v; want %q", i, line, err, msg)
		}
	}
}

// When both directions of an upgraded connection end together (the client
// half-closes, the app answers by closing), the tunnel must end too: it
// once waited for a third end of two pipes, and the handler never returned.
func TestUpgradeTunnelEndsWhenBothSidesClose(t *testing.T) {
	skipShort(t)
	e := startProxy(t)
	c, br := e.upgrade(t, "/upgrade?both-close")
	c.CloseWrite()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(br); err != nil {
		t.Fatalf("reading to the end: %v", err)
	}
	line := e.px.waitLog(5*time.Second, `"path":"/upgrade"`)
	if !strings.Contains(line, `"status":101`) {
		t.Errorf("access log: %s", line)
	}
}

func TestStreamingIsUnbuffered(t *testing.T) {
	skipShort(t)
	e := startProxy(t)
	for _, tc := range []struct{ name, path string }{
		{"sse", "/sse?n=4&interval=700ms"},
		{"chunked", "/stream?chunks=4&interval=700ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, c := range []*http.Client{e.h1, e.h2} {
				start := time.Now()
				resp, err := c.Get("https://app.example" + tc.path)
				if err != nil {
					t.Fatal(err)
				}
				br := bufio.NewReader(resp.Body)
				if _, err := br.ReadString('\n'); err != nil {
					t.Fatal(err)
				}
				first := time.Since(start)
				io.Copy(io.Discard, br)
				resp.Body.Close()
				total := time.Since(start)
				// The app needs ~2.1 s to finish; the first piece must not
				// wait for the end.
				if first > total/2 {
					t.Errorf("%s: first piece after %v of %v: buffered", resp.Proto, first, total)
				}
			}
		})
	}
}

func TestLargeBodiesStream(t *testing.T) {
	skipShort(t)
	e := startProxy(t)
	const size = 64 << 20
	// Warm up, then note the resident size: a proxy that held a body would
	// grow by the body's size.
	get(t, e.h2, "https://app.example/")
	get(t, e.h1, "https://app.example/")
	before := procStatus(t, e.px.cmd.Process.Pid, "VmRSS:")
	pr, pw := io.Pipe()
	go func() {
		buf := make([]byte, 1<<20)
		for range size / len(buf) {
			if _, err := pw.Write(buf); err != nil {
				return
			}
		}
		pw.Close()
	}()
	resp, err := e.h2.Post("https://app.example/upload", "application/octet-stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	var up struct{ Bytes int64 }
	json.NewDecoder(resp.Body).Decode(&up)
	resp.Body.Close()
	if up.Bytes != size {
		t.Errorf("app received %d bytes, want %d", up.Bytes, size)
	}
	resp, err = e.h1.Get(fmt.Sprintf("https://app.example/big?size=%d", size))
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != size {
		t.Errorf("downloaded %d bytes (%v), want %d", n, err, size)
	}
	// The proxy never held a body: its peak grew by far less than 64 MiB.
	if peak := procStatus(t, e.px.cmd.Process.Pid, "VmHWM:"); peak-before > 40<<20 {
		t.Errorf("outrider peak RSS grew %d MiB (from %d MiB) during 64 MiB transfers: bodies were buffered", (peak-before)>>20, before>>20)
	}
}

// procStatus reads a size field (VmRSS:, VmHWM:) of /proc/PID/status, in bytes.
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// rawExchange sends raw bytes on a fresh TLS connection and returns the
// first response's status code (0 if the connection closed without one).
func (e *proxyEnv) rawExchange(t *testing.T, raw string) int {
	t.Helper()
	c := e.tlsConn(t)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		return 0
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestSmugglingProbesNeverReachApp(t *testing.T) {
	skipShort(t)
	e := startProxy(t)
	probes := []struct{ name, raw string }{
		{"conflicting content-length", "POST /probe-cl HTTP/1.1\r\nHost: app.example\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"},
		{"space before colon", "GET /probe-space HTTP/1.1\r\nHost: app.example\r\nContent-Length : 5\r\n\r\nhello"},
		{"invalid chunk size", "POST /probe-chunk HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"},
		{"unknown transfer-encoding", "POST /probe-te HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"},
		{"oversized headers", "GET /probe-big HTTP/1.1\r\nHost: app.example\r\nX-Big: " + strings.Repeat("a", 70<<10) + "\r\n\r\n"},
		{"no host", "GET /probe-nohost HTTP/1.1\r\n\r\n"},
	}
	for _, p := range probes {
		t.Run(p.name, func(t *testing.T) {
			// 501 is RFC 9112 §6.1's answer to a transfer coding the server
			// does not implement.
			if code := e.rawExchange(t, p.raw); code != 0 && (code < 400 || code > 499) && code != 501 {
				t.Errorf("answered %d, want 4xx", code)
			}
		})
	}
	t.Run("obs-fold replaced by a space", func(t *testing.T) {
		// RFC 9112 §5.2: a server must reject obs-fold or replace it with
		// SP before forwarding. Go replaces it; the app sees one line.
		var got echo
		c := e.tlsConn(t)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET /echo HTTP/1.1\r\nHost: app.example\r\nX-A: a\r\n b\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			if v := strings.Join(got.Header["X-A"], ","); strings.ContainsAny(v, "\r\n") || v != "a b" {
				t.Errorf("app saw folded header %q", v)
			}
		} else if resp.StatusCode != 400 {
			t.Errorf("obs-fold answered %d, want 400 or forwarded unfolded", resp.StatusCode)
		}
	})
	t.Run("CL and TE framed by TE alone", func(t *testing.T) {
		// RFC 9112 §6.3: Transfer-Encoding wins; the smuggled tail must not
		// become a second request at the app.
		raw := "POST /echo HTTP/1.1\r\nHost: app.example\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"5\r\nhello\r\n0\r\n\r\n"
		c := e.tlsConn(t)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, raw)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		var got echo
		json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if resp.StatusCode == 200 && (got.BodyBytes != 5 || got.Header["Content-Length"] != nil) {
			t.Errorf("app saw body %d bytes, Content-Length %v: framed by Content-Length", got.BodyBytes, got.Header["Content-Length"])
		}
		// Issue #11: answered, then the connection is closed.
		if !resp.Close {
			t.Error("response to a request with Content-Length and Transfer-Encoding keeps the connection open")
		}
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("connection still open after the answer (read %d bytes)", n)
		}
	})
	t.Run("CL and TE pipelined behind a clean request", func(t *testing.T) {
		// The mark is read ahead with the first request's bytes; the
		// second must still close the connection.
		raw := "GET /echo HTTP/1.1\r\nHost: app.example\r\n\r\n" +
			"POST /echo HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n"
		c := e.tlsConn(t)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, raw)
		br := bufio.NewReader(c)
		for i, wantClose := range []bool{false, true} {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("response %d: %v", i, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.Close != wantClose {
				t.Errorf("response %d: close = %v, want %v", i, resp.Close, wantClose)
			}
		}
	})
	var seen []struct{ Path string }
	getJSON(t, plainClient, "http://"+e.app.addr("addr")+"/-/seen", &seen)
	for _, s := range seen {
		if strings.HasPrefix(s.Path, "/probe") {
			t.Errorf("probe %s reached the app", s.Path)
		}
	}
}

func TestUpstreamFailures(t *testing.T) {
	skipShort(t)
	t.Run("unreachable is 502", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		dead := ln.Addr().String()
		ln.Close()
		ca := testcert.NewCA(t)
		cf, kf := ca.LeafFiles(t, t.TempDir(), "app.example")
		px := startOutrider(t, "proxy", "--listen", "127.0.0.1:0", "--http-listen", "", "--admin-listen", "127.0.0.1:0",
			"--upstream", "http://"+dead, "--cert", cf, "--key", kf)
		c := clientFor(px.addr("https_addr"), ca.Pool(), true)
		code, body, _ := get(t, c, "https://app.example/")
		if code != http.StatusBadGateway || strings.Contains(body, dead) || strings.Contains(body, "refused") {
			t.Errorf("got %d %q, want 502 with no internal detail", code, body)
		}
		if code, body, _ := get(t, plainClient, "http://"+px.addr("admin_addr")+"/readyz"); code != 503 || !strings.Contains(body, "upstream") {
			t.Errorf("/readyz = %d %q, want 503 naming the upstream", code, body)
		}
		_, metrics, _ := get(t, plainClient, "http://"+px.addr("admin_addr")+"/metrics")
		if metricValue(metrics, `outrider_proxy_upstream_errors_total{reason="dial"}`) < 1 {
			t.Errorf("dial error not counted:\n%s", grepLines(metrics, "upstream_errors"))
		}
	})
	t.Run("slow is 504", func(t *testing.T) {
		e := startProxy(t, "--upstream-timeout", "1s")
		start := time.Now()
		code, body, _ := get(t, e.h2, "https://app.example/hang")
		if code != http.StatusGatewayTimeout || body != "Gateway Timeout\n" {
			t.Errorf("got %d %q, want 504", code, body)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("504 after %v, want about 1s", d)
		}
		// A slow body after fast headers is not cut by --upstream-timeout.
		if code, _, _ := get(t, e.h1, "https://app.example/stream?chunks=3&interval=600ms"); code != 200 {
			t.Errorf("streaming response: %d", code)
		}
	})
	t.Run("app restarts", func(t *testing.T) {
		e := startProxy(t)
		e.app.stop()
		if code, _, _ := get(t, e.h2, "https://app.example/"); code != http.StatusBadGateway {
			t.Errorf("app down: %d, want 502", code)
		}
		// Restart the app on the same address; outrider recovers by itself.
		addr := e.app.addr("addr")
		start(t, procSpec{name: "testapp2", bin: bins.testapp, args: []string{"--listen", addr}})
		waitStatusCode(t, e.h2, "https://app.example/", http.StatusOK)
	})
}

func TestLegacyRewrites(t *testing.T) {
	skipShort(t)
	e := startProxy(t)
	appAddr := e.app.addr("addr")
	cases := []struct{ to, want string }{
		{"http://app.example/login", "https://app.example/login"},
		{"http://" + appAddr + "/x?y=1", "https://app.example/x?y=1"},
		{"http://localhost:" + strings.Split(appAddr, ":")[1] + "/z", "https://app.example/z"},
		{"http://other.example/", "http://other.example/"},
		{"/relative", "/relative"},
	}
	for _, c := range cases {
		_, _, h := get(t, e.h1, "https://app.example/redirect?to="+c.to)
		if got := h.Get("Location"); got != c.want {
			t.Errorf("Location %q became %q, want %q", c.to, got, c.want)
		}
	}
	_, _, h := get(t, e.h1, "https://app.example/redirect?to=/&refresh=5%3B%20url=http://app.example/next")
	if got := h.Get("Refresh"); got != "5; url=https://app.example/next" {
		t.Errorf("Refresh = %q", got)
	}
	_, _, h = get(t, e.h2, "https://app.example/cookie")
	for _, c := range h.Values("Set-Cookie") {
		if strings.Count(strings.ToLower(c), "secure") != 1 {
			t.Errorf("Set-Cookie %q: want exactly one Secure", c)
		}
	}
	var got echo
	getJSON(t, e.h1, "https://app.example/echo", &got, "Destination", "https://app.example/new/name")
	if d := strings.Join(got.Header["Destination"], ""); d != "http://app.example/new/name" {
		t.Errorf("Destination = %q, want http://app.example/new/name", d)
	}

	t.Run("off", func(t *testing.T) {
		e := startProxy(t, "--legacy-rewrites", "")
		_, _, h := get(t, e.h1, "https://app.example/redirect?to=http://app.example/login")
		if got := h.Get("Location"); got != "http://app.example/login" {
			t.Errorf("Location rewritten with rewrites off: %q", got)
		}
	})
}

func TestHTTPRedirectsToHTTPS(t *testing.T) {
	skipShort(t)
	e := startProxy(t)
	req, _ := http.NewRequest(http.MethodPost, "http://"+e.http+"/a/b?c=d&e=f", strings.NewReader("x"))
	req.Host = "app.example"
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_, port, _ := net.SplitHostPort(e.https)
	want := "https://app.example:" + port + "/a/b?c=d&e=f"
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Errorf("got %d %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	// Issue #12: the redirect is access-logged like any HTTPS request.
	e.px.waitLine(5*time.Second, func(l string) bool {
		return strings.Contains(l, `"scheme":"http"`) && strings.Contains(l, `"status":308`) && strings.Contains(l, `"path":"/a/b"`)
	})
	if !strings.Contains(e.px.output(), `"scheme":"http"`) {
		t.Errorf("no access-log line for the 308:\n%s", e.px.output())
	}
}

func TestIdleTimeouts(t *testing.T) {
	skipShort(t)
	e := startProxy(t, "--idle-timeout", "1500ms", "--header-timeout", "1s")

	t.Run("slowloris headers cut", func(t *testing.T) {
		c := e.tlsConn(t)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: app.example\r\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		start := time.Now()
		b, _ := io.ReadAll(c) // returns when the server closes
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("half-sent headers held %v (%q), want cut after ~1s", d, b)
		}
	})
	t.Run("silent upgrade cut", func(t *testing.T) {
		c := e.tlsConn(t)
		fmt.Fprint(c, "GET /upgrade HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		br := bufio.NewReader(c)
		if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
			t.Fatalf("upgrade: %v", err)
		}
		// Keep it busy past the idle timeout: it must survive.
		for i := range 4 {
			time.Sleep(500 * time.Millisecond)
			fmt.Fprintf(c, "tick %d\n", i)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := br.ReadString('\n'); err != nil {
				t.Fatalf("busy upgraded connection cut after %d ticks: %v", i, err)
			}
		}
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		_, err := br.ReadString('\n')
		if d := time.Since(start); err == nil || d > 8*time.Second {
			t.Errorf("silent upgraded connection: err %v after %v, want closed after ~1.5s", err, d)
		}
	})
	t.Run("moving stream survives", func(t *testing.T) {
		code, body, _ := get(t, e.h2, "https://app.example/sse?n=5&interval=700ms")
		if code != 200 || strings.Count(body, "data:") != 5 {
			t.Errorf("stream longer than the idle timeout: %d, %d events", code, strings.Count(body, "data:"))
		}
	})
	t.Run("stalled upload cut", func(t *testing.T) {
		c := e.tlsConn(t)
		io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: app.example\r\nContent-Length: 100\r\n\r\nonly-part")
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		start := time.Now()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if d := time.Since(start); d > 8*time.Second {
			t.Errorf("stalled upload held %v", d)
		}
		if err == nil && resp.StatusCode != http.StatusRequestTimeout {
			t.Errorf("stalled upload answered %d, want 408 or a closed connection", resp.StatusCode)
		}
	})
	t.Run("client that never reads is cut", func(t *testing.T) {
		c := e.tlsConn(t)
		io.WriteString(c, "GET /big?size=268435456 HTTP/1.1\r\nHost: app.example\r\n\r\n")
		// Read nothing; the proxy must give up writing and close.
		time.Sleep(4 * time.Second)
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, _ := io.Copy(io.Discard, c)
		if n >= 268435456 {
			t.Errorf("stalled reader got the whole body; want the connection cut")
		}
	})
}

func TestStaticCertReload(t *testing.T) {
	skipShort(t)
	serial := func(e *proxyEnv) string {
		c, err := tls.Dial("tcp", e.https, &tls.Config{RootCAs: e.ca.Pool(), ServerName: "app.example"})
		if err != nil {
			return "dial: " + err.Error()
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	writeLeaf := func(t *testing.T, ca *testcert.CA, dir string) {
		c, k := ca.Leaf(t, time.Now().Add(24*time.Hour), "app.example", "localhost", "127.0.0.1")
		os.WriteFile(filepath.Join(dir, "cert.pem.tmp"), c, 0o644)
		os.WriteFile(filepath.Join(dir, "key.pem.tmp"), k, 0o600)
		os.Rename(filepath.Join(dir, "key.pem.tmp"), filepath.Join(dir, "key.pem"))
		os.Rename(filepath.Join(dir, "cert.pem.tmp"), filepath.Join(dir, "cert.pem"))
	}
	changed := func(t *testing.T, e *proxyEnv, old string) string {
		var now string
		waitFor(t, 10*time.Second, func() error {
			if now = serial(e); now == old || strings.HasPrefix(now, "dial") {
				return fmt.Errorf("still serving %s", now)
			}
			return nil
		})
		return now
	}

	t.Run("rename", func(t *testing.T) {
		e := startProxy(t)
		before := serial(e)
		writeLeaf(t, e.ca, filepath.Dir(e.certFile))
		changed(t, e, before)
	})

	t.Run("open upgraded connection survives rotation", func(t *testing.T) {
		e := startProxy(t)
		c, br := e.upgrade(t, "/upgrade")
		before := c.ConnectionState().PeerCertificates[0].SerialNumber.String()
		writeLeaf(t, e.ca, filepath.Dir(e.certFile))
		changed(t, e, before)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "still here\n")
		if line, err := br.ReadString('\n'); err != nil || line != "still here\n" {
			t.Errorf("upgraded connection after rotation: %q, %v", line, err)
		}
	})

	t.Run("broken replacement keeps the old certificate", func(t *testing.T) {
		e := startProxy(t)
		before := serial(e)
		os.WriteFile(e.certFile, []byte("not a certificate"), 0o644)
		e.px.waitLog(10*time.Second, "certificate reload failed")
		if now := serial(e); now != before {
			t.Errorf("serving %s after a broken replacement, want %s", now, before)
		}
		code, metrics, _ := get(t, plainClient, "http://"+e.admin+"/metrics")
		if code != 200 || metricValue(metrics, `outrider_certs_reloads_total{result="error"}`) < 1 {
			t.Errorf("failed reload not counted:\n%s", grepLines(metrics, "reloads"))
		}
	})

	t.Run("kubernetes ..data swap", func(t *testing.T) {
		ca := testcert.NewCA(t)
		dir := t.TempDir()
		swap := func(name string) {
			v := filepath.Join(dir, name)
			os.Mkdir(v, 0o755)
			writeLeaf(t, ca, v)
			os.Symlink(name, filepath.Join(dir, "..data_tmp"))
			os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data"))
		}
		swap("..v1")
		os.Symlink("..data/cert.pem", filepath.Join(dir, "tls.crt"))
		os.Symlink("..data/key.pem", filepath.Join(dir, "tls.key"))
		app := startApp(t)
		px := startOutrider(t, "proxy", "--listen", "127.0.0.1:0", "--http-listen", "", "--admin-listen", "",
			"--upstream", "http://"+app.addr("addr"), "--cert", filepath.Join(dir, "tls.crt"), "--key", filepath.Join(dir, "tls.key"))
		e := &proxyEnv{https: px.addr("https_addr"), ca: ca}
		before := serial(e)
		swap("..v2")
		changed(t, e, before)
	})

	t.Run("SIGHUP", func(t *testing.T) {
		e := startProxy(t)
		before := serial(e)
		// Write in place (no events for a directory watch to miss? there
		// are; SIGHUP must work regardless), then signal.
		c, k := e.ca.Leaf(t, time.Now().Add(24*time.Hour), "app.example")
		os.WriteFile(e.keyFile, k, 0o600)
		os.WriteFile(e.certFile, c, 0o644)
		e.px.signal(syscall.SIGHUP)
		changed(t, e, before)
	})
}

func TestShutdownDrainsInFlight(t *testing.T) {
	skipShort(t)
	e := startProxy(t)
	res := getAsync(e.h2, "https://app.example/slow?delay=2s")
	// Wait until the app has the request, then ask outrider to stop.
	e.waitAppSaw(t, "/slow")
	e.px.signal(syscall.SIGTERM)
	e.px.waitLog(10*time.Second, "shutting down")
	if code, _, _ := get(t, plainClient, "http://"+e.admin+"/readyz"); code != 503 {
		t.Errorf("/readyz during drain = %d, want 503", code)
	}
	// The listener closes right after that line is logged.
	waitFor(t, 5*time.Second, func() error {
		if c, err := net.DialTimeout("tcp", e.https, time.Second); err == nil {
			c.Close()
			return fmt.Errorf("new connection accepted during drain")
		}
		return nil
	})
	r := <-res
	if r.err != nil || r.code != 200 || r.body != "slow response done\n" {
		t.Errorf("in-flight request: %d %q %v, want 200", r.code, r.body, r.err)
	}
	e.px.stopped = true
	if code := e.px.wait(30 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}

func TestFlagsFromEnvironmentAndErrors(t *testing.T) {
	skipShort(t)
	app := startApp(t)
	ca := testcert.NewCA(t)
	cf, kf := ca.LeafFiles(t, t.TempDir(), "app.example")
	px := start(t, procSpec{name: "outrider env", bin: bins.outrider, args: []string{"proxy", "--log-format=json"},
		env: []string{"OUTRIDER_LISTEN=127.0.0.1:0", "OUTRIDER_HTTP_LISTEN=", "OUTRIDER_ADMIN_LISTEN=127.0.0.1:0",
			"OUTRIDER_UPSTREAM=http://" + app.addr("addr"), "OUTRIDER_CERT=" + cf, "OUTRIDER_KEY=" + kf,
			"OUTRIDER_DOMAIN=app.example,www.app.example"}})
	if px.ready["http_addr"] != "" {
		t.Errorf("OUTRIDER_HTTP_LISTEN= did not turn the HTTP listener off: %v", px.ready["http_addr"])
	}
	c := clientFor(px.addr("https_addr"), ca.Pool(), true)
	if code, _, _ := get(t, c, "https://app.example/"); code != 200 {
		t.Errorf("proxy configured from env: %d", code)
	}
	if code, _, _ := get(t, c, "https://app.example/", "Host", "nope.example"); code != 421 {
		t.Errorf("OUTRIDER_DOMAIN list not applied: %d", code)
	}

	bad := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"no upstream", []string{"proxy", "--cert", cf, "--key", kf}, nil, "--upstream is required"},
		{"remote upstream", []string{"proxy", "--upstream", "http://192.0.2.1:80", "--cert", cf, "--key", kf}, nil, "not loopback"},
		{"bad duration", []string{"proxy", "--upstream-timeout", "soon"}, nil, "soon"},
		{"bad env", []string{"proxy"}, []string{"OUTRIDER_IDLE_TIMEOUT=forever"}, "OUTRIDER_IDLE_TIMEOUT"},
		{"missing cert file", []string{"proxy", "--upstream", "http://127.0.0.1:1", "--cert", "/nonexistent.pem", "--key", kf}, nil, "/nonexistent.pem"},
		{"unknown flag", []string{"proxy", "--no-such-flag"}, nil, "no-such-flag"},
		{"unknown command", []string{"frobnicate"}, nil, "unknown command"},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			p := start(t, procSpec{name: "outrider " + b.name, bin: bins.outrider, args: b.args, env: b.env, noReady: true, exitCode: 2})
			p.stopped = true
			if code := p.wait(20 * time.Second); code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			out := strings.TrimSpace(p.output())
			if strings.Count(out, "\n") != 0 || !strings.Contains(out, b.want) || strings.Contains(out, "goroutine") {
				t.Errorf("want one line naming %q, got:\n%s", b.want, out)
			}
		})
	}

	t.Run("help lists every flag with its env twin", func(t *testing.T) {
		p := start(t, procSpec{name: "outrider help", bin: bins.outrider, args: []string{"help", "proxy"}, noReady: true})
		p.stopped = true
		if code := p.wait(20 * time.Second); code != 0 {
			t.Errorf("exit %d", code)
		}
		for _, want := range []string{"--upstream", "OUTRIDER_UPSTREAM", "--acme-email", "OUTRIDER_ACME_EMAIL", "--trusted-proxies", "OUTRIDER_TRUSTED_PROXIES"} {
			if !strings.Contains(p.output(), want) {
				t.Errorf("help does not mention %s", want)
			}
		}
	})
}

func TestUnixSocketUpstream(t *testing.T) {
	skipShort(t)
	sock := filepath.Join(t.TempDir(), "app.sock")
	start(t, procSpec{name: "testapp unix", bin: bins.testapp, args: []string{"--unix", sock}})
	ca := testcert.NewCA(t)
	cf, kf := ca.LeafFiles(t, t.TempDir(), "app.example")
	px := startOutrider(t, "proxy", "--listen", "127.0.0.1:0", "--http-listen", "", "--admin-listen", "",
		"--upstream", "unix://"+sock, "--cert", cf, "--key", kf)
	var got echo
	getJSON(t, clientFor(px.addr("https_addr"), ca.Pool(), true), "https://app.example/echo", &got)
	if got.Host != "app.example" || got.Path != "/echo" {
		t.Errorf("app over unix socket saw %+v", got)
	}
}

func TestMetricsAndAccessLog(t *testing.T) {
	skipShort(t)
	e := startProxy(t)
	get(t, e.h2, "https://app.example/echo?secret=1")
	line := e.px.waitLog(10*time.Second, `"msg":"request"`)
	var rec map[string]any
	json.Unmarshal([]byte(line), &rec)
	for _, k := range []string{"method", "path", "status", "bytes", "duration_seconds", "upstream_duration_seconds", "remote_addr"} {
		if _, ok := rec[k]; !ok {
			t.Errorf("access log line lacks %q: %s", k, line)
		}
	}
	if strings.Contains(line, "secret=1") {
		t.Errorf("access log carries the query string: %s", line)
	}
	_, metrics, _ := get(t, plainClient, "http://"+e.admin+"/metrics")
	for _, series := range []string{
		`outrider_proxy_requests_total{code="200",method="GET",proto="http2"}`,
		`outrider_proxy_request_duration_seconds_count`,
		`outrider_proxy_upstream_duration_seconds_count`,
		`outrider_proxy_open_connections`,
		`outrider_certs_expiry_timestamp_seconds{domain="app.example"}`,
		`outrider_build_info{go_version`,
	} {
		if !strings.Contains(metrics, series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
	if code, _, _ := get(t, plainClient, "http://"+e.admin+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code, _, _ := get(t, plainClient, "http://"+e.admin+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d", code)
	}
	if code, _, _ := get(t, plainClient, "http://"+e.admin+"/debug/pprof/"); code != 404 {
		t.Errorf("pprof on by default: %d", code)
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestTopOnPublicListener(t *testing.T) {
	skipShort(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("s3cret-token\n"), 0o600)
	e := startProxy(t, "--top", "--top-token-file", tokenFile, "--top-public")
	var top struct {
		Host      map[string]any   `json:"host"`
		Processes []map[string]any `json:"processes"`
	}
	waitFor(t, 10*time.Second, func() error {
		if code := getJSON(t, e.h2, "https://app.example/top?sort=cpu&limit=5", &top, "Authorization", "Bearer s3cret-token"); code != 200 {
			return fmt.Errorf("/top = %d", code)
		}
		return nil
	})
	if len(top.Processes) == 0 || len(top.Processes) > 5 || top.Host == nil {
		t.Errorf("/top through the proxy: %d processes, host %v", len(top.Processes), top.Host != nil)
	}
	if code, _, _ := get(t, e.h2, "https://app.example/top"); code != http.StatusUnauthorized {
		t.Errorf("/top without the token = %d, want 401", code)
	}
	// Issue #12: the per-process series name every busy process; /top
	// guards them with its token, so the admin /metrics must not carry them.
	if _, body, _ := get(t, plainClient, "http://"+e.admin+"/metrics"); strings.Contains(body, "outrider_top_") {
		t.Errorf("admin /metrics carries /top series:\n%s", grepLines(body, "outrider_top_process"))
	}
	if code, _, _ := get(t, plainClient, "http://"+e.admin+"/top/metrics"); code != http.StatusUnauthorized {
		t.Errorf("/top/metrics without the token = %d, want 401", code)
	}
	waitFor(t, 10*time.Second, func() error {
		code, body, _ := get(t, plainClient, "http://"+e.admin+"/top/metrics", "Authorization", "Bearer s3cret-token")
		if code != 200 || !strings.Contains(body, "outrider_top_process_cpu_seconds_total{") {
			return fmt.Errorf("/top/metrics with the token = %d without per-process series", code)
		}
		return nil
	})
	// Paths that only start with /top still belong to the app.
	var got echo
	if getJSON(t, e.h1, "https://app.example/echo", &got); got.Path != "/echo" {
		t.Errorf("app not reached: %+v", got)
	}
	if code, _, _ := get(t, e.h1, "https://app.example/topology"); code != 404 {
		t.Errorf("/topology = %d, want the app's 404", code)
	}

	t.Run("refused without a token", func(t *testing.T) {
		p := start(t, procSpec{name: "outrider top-public", bin: bins.outrider, noReady: true, exitCode: 2,
			args: []string{"proxy", "--upstream", "http://127.0.0.1:1", "--cert", e.certFile, "--key", e.keyFile, "--top", "--top-public"}})
		p.stopped = true
		if code := p.wait(20 * time.Second); code != 2 || !strings.Contains(p.output(), "--top-token-file") {
			t.Errorf("exit %d, output %q; want 2 naming --top-token-file", code, p.output())
		}
	})
}
