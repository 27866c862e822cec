package integration

// Issue #11: the request path in front of real legacy apps and real clients.
// Each test pins one thing a real app or client tripped over.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// outriderFor starts outrider in front of an app at upstream (an address).
func outriderFor(t *testing.T, upstream string, extra ...string) *proxyEnv {
	t.Helper()
	e := startProxy(t, append([]string{"--upstream", "http://" + upstream}, extra...)...)
	e.app.stop() // the testapp startProxy started is not the app under test
	return e
}

// curl runs curl against outrider's HTTPS address for app.example and
// returns its stdout. -w output follows the body.
func curl(t *testing.T, e *proxyEnv, args ...string) string {
	t.Helper()
	bin := needTool(t, "curl")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, e.ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	port := portOnly(e.https)
	base := []string{"-sS", "--max-time", "20", "--cacert", caFile, "--resolve", "app.example:" + port + ":127.0.0.1"}
	for i, a := range args {
		args[i] = strings.Replace(a, "https://app.example/", "https://app.example:"+port+"/", 1)
	}
	out, err := exec.Command(bin, append(base, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func portOnly(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

const cgiScript = `#!/usr/bin/perl
# A CGI.pm app of the kind that separates parameters with ';'.
use strict; use CGI;
my $q = CGI->new;
print $q->header(-type => 'text/plain', -charset => 'utf-8');
print "QUERY_STRING=$ENV{QUERY_STRING}\n";
for my $p (sort $q->param) { print "$p=", join(",", $q->multi_param($p)), "\n"; }
`

// TestCGIAppGetsQueryStringByteForByte: a Perl CGI.pm app behind Python's
// CGI server receives the query exactly as the client sent it — ';'
// separators, a stray '%', encoded slashes — and so decodes the same
// parameters as when reached directly.
func TestCGIAppGetsQueryStringByteForByte(t *testing.T) {
	skipShort(t)
	t.Parallel()
	python := needTool(t, "python3")
	needTool(t, "perl")
	if err := exec.Command("perl", "-MCGI", "-e", "1").Run(); err != nil {
		if inCI() {
			t.Fatal("perl CGI.pm (libcgi-pm-perl) is required in CI")
		}
		t.Skip("perl CGI.pm (libcgi-pm-perl) not installed")
	}
	// Python's CGI server runs scripts as nobody when started as root:
	// the directory must be readable by others, unlike t.TempDir's.
	root, err := os.MkdirTemp("", "outrider-cgi-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	os.Chmod(root, 0o755)
	os.Mkdir(filepath.Join(root, "cgi-bin"), 0o755)
	if err := os.WriteFile(filepath.Join(root, "cgi-bin", "params.pl"), []byte(cgiScript), 0o755); err != nil {
		t.Fatal(err)
	}
	port := pickPort(t)
	app := fmt.Sprintf("127.0.0.1:%d", port)
	start(t, procSpec{name: "python CGI server", bin: python, noReady: true,
		args: []string{"-m", "http.server", "--cgi", "--bind", "127.0.0.1", "--directory", root, strconv.Itoa(port)}})
	waitFor(t, 10*time.Second, func() error {
		c, err := net.Dial("tcp", app)
		if err == nil {
			c.Close()
		}
		return err
	})
	e := outriderFor(t, app)
	for _, query := range []string{
		"a=1;b=2",
		"a=1;b=2&c=3",
		"jsessionid=ABC;x=%zz;y=%2Fetc%2Fpasswd",
		"name=caf%C3%A9;list=1;list=2&empty=",
		"sig=abc%3D%3D;exp=1700000000",
	} {
		t.Run(query, func(t *testing.T) {
			resp, err := plainClient.Get("http://" + app + "/cgi-bin/params.pl?" + query)
			if err != nil {
				t.Fatal(err)
			}
			direct, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			via := curl(t, e, "https://app.example/cgi-bin/params.pl?"+query)
			if via != string(direct) {
				t.Errorf("through outrider the app decoded\n%s\ndirectly\n%s", via, direct)
			}
			if !strings.Contains(via, "QUERY_STRING="+query+"\n") {
				t.Errorf("the app's QUERY_STRING is not the client's %q:\n%s", query, via)
			}
		})
	}
}

const nodeExpectApp = `
const http = require('http');
const srv = http.createServer((req, res) => {
  let n = 0;
  req.on('data', c => { n += c.length; });
  req.on('end', () => { res.end(JSON.stringify({bytes: n, expect: req.headers['expect'] || ''})); });
});
// Refuse an unauthorised upload before reading a byte of it; otherwise let
// it come (Node sends no 100 Continue by itself while this listener is set).
srv.on('checkContinue', (req, res) => {
  if (req.headers['authorization'] !== 'Bearer ok') {
    res.writeHead(401, {'Content-Type': 'text/plain', 'Connection': 'close'});
    res.end('unauthorised\n');
    return;
  }
  res.writeContinue();
  srv.emit('request', req, res);
});
srv.listen(0, '127.0.0.1', () => {
  console.error(JSON.stringify({msg: 'listening', addr: '127.0.0.1:' + srv.address().port}));
});
process.on('SIGINT', () => { srv.closeAllConnections(); process.exit(0); });
`

// startNode runs a Node.js app written to a temporary file.
func startNode(t *testing.T, src string) *proc {
	t.Helper()
	node := needTool(t, "node")
	f := filepath.Join(t.TempDir(), "app.js")
	if err := os.WriteFile(f, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return start(t, procSpec{name: "node app", bin: node, args: []string{f}})
}

// TestExpectContinueReachesAppFirst: a Node app that refuses an upload
// with 401 before reading it is heard before any body byte is sent, over
// HTTP/1.1 (with a length and chunked) and HTTP/2; an authorised upload
// goes through whole after the app's own 100 Continue. curl waits 30 s for
// a 100 here, so an answer that does not come from the app is a timeout.
func TestExpectContinueReachesAppFirst(t *testing.T) {
	skipShort(t)
	t.Parallel()
	node := startNode(t, nodeExpectApp)
	e := outriderFor(t, node.addr("addr"))
	body := filepath.Join(t.TempDir(), "upload")
	if err := os.WriteFile(body, bytes.Repeat([]byte("u"), 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"http1.1 content-length", []string{"--http1.1"}},
		{"http1.1 chunked", []string{"--http1.1", "-H", "Transfer-Encoding: chunked"}},
		{"http2", []string{"--http2"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append(tt.args, "-H", "Expect: 100-continue", "--expect100-timeout", "30",
				"--data-binary", "@"+body, "-w", "\n%{http_code} %{size_upload}")
			out := curl(t, e, append(args, "https://app.example/upload")...)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if last := lines[len(lines)-1]; last != "401 0" {
				t.Errorf("unauthorised upload: code and bytes uploaded = %q, want \"401 0\"\n%s", last, out)
			}
			out = curl(t, e, append(args, "-H", "Authorization: Bearer ok", "https://app.example/upload")...)
			lines = strings.Split(strings.TrimSpace(out), "\n")
			var got struct {
				Bytes  int
				Expect string
			}
			if err := json.Unmarshal([]byte(lines[0]), &got); err != nil || got.Bytes != 3<<20 || got.Expect != "100-continue" {
				t.Errorf("authorised upload: app saw %+v (%v), want all %d bytes after Expect: 100-continue\n%s", got, err, 3<<20, out)
			}
			var code, sent int
			fmt.Sscan(lines[len(lines)-1], &code, &sent)
			if code != 200 || sent < 3<<20 { // chunked framing adds a little
				t.Errorf("authorised upload: %q, want 200 and every byte uploaded", lines[len(lines)-1])
			}
		})
	}
}

const nodeKeepAliveApp = `
const http = require('http');
// Node's defaults: keepAliveTimeout 5 s, announced as Keep-Alive: timeout=5.
const srv = http.createServer((req, res) => {
  let n = 0;
  req.on('data', c => { n += c.length; });
  req.on('end', () => { res.end('ok ' + n + '\n'); });
});
srv.listen(0, '127.0.0.1', () => {
  console.error(JSON.stringify({msg: 'listening', addr: '127.0.0.1:' + srv.address().port, keep_alive_ms: srv.keepAliveTimeout}));
});
process.on('SIGINT', () => { srv.closeAllConnections(); process.exit(0); });
`

// TestNodeDefaultKeepAliveNoStale502: bursts of requests separated by
// pauses around Node's 5 s keep-alive timeout — the moment Node closes
// idle connections — get no 502: outrider retires each connection before
// the app's announced timeout.
func TestNodeDefaultKeepAliveNoStale502(t *testing.T) {
	skipShort(t)
	t.Parallel()
	node := startNode(t, nodeKeepAliveApp)
	if ka, _ := node.ready["keep_alive_ms"].(float64); ka != 5000 {
		t.Fatalf("node keepAliveTimeout = %v ms, want its default 5000", ka)
	}
	e := outriderFor(t, node.addr("addr"), "--access-log=false")
	var bad atomic.Int32
	burst := func() {
		var wg sync.WaitGroup
		for i := range 32 {
			wg.Go(func() {
				c := e.h1
				if i%2 == 0 {
					c = e.h2
				}
				var resp *http.Response
				var err error
				if i%4 == 1 {
					resp, err = c.Post("https://app.example/", "text/plain", strings.NewReader("form=1"))
				} else {
					resp, err = c.Get("https://app.example/")
				}
				if err != nil {
					bad.Add(1)
					t.Errorf("request: %v", err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					bad.Add(1)
					t.Errorf("status %d", resp.StatusCode)
				}
			})
		}
		wg.Wait()
	}
	burst()
	for _, pause := range []time.Duration{4950 * time.Millisecond, 5000 * time.Millisecond, 5050 * time.Millisecond} {
		time.Sleep(pause) // the pause is the test: Node closes at 5 s
		burst()
	}
	if n := bad.Load(); n > 0 {
		t.Errorf("%d requests failed against Node's default keep-alive", n)
	}
	_, metrics, _ := get(t, plainClient, "http://"+e.admin+"/metrics")
	if v := metricValue(metrics, `outrider_proxy_upstream_errors_total{reason="protocol"}`); v != 0 {
		t.Errorf("upstream protocol errors = %v, want 0", v)
	}
}

// TestAppRestartHoldsRequests: while the app restarts, requests wait for it
// to listen again (--upstream-wait) instead of getting 502; with the wait
// off, the 502 page from --error-pages is served.
func TestAppRestartHoldsRequests(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t, "--access-log=false")
	addr := e.app.addr("addr")
	tally, stop := traffic(t, e.h2, "https://app.example/")
	waitStatusCode(t, e.h2, "https://app.example/", 200)
	for round := range 2 {
		e.app.stop() // a config apply restarts the app: SIGINT, exit, start again
		time.Sleep(700 * time.Millisecond)
		e.app = start(t, procSpec{name: fmt.Sprintf("testapp restart %d", round), bin: bins.testapp, args: []string{"--listen", addr}})
		time.Sleep(300 * time.Millisecond)
	}
	stop()
	codes := tally.snapshot()
	t.Logf("status codes across two restarts: %v", codes)
	for code, n := range codes {
		if code != 200 {
			t.Errorf("%d answers with status %d during restarts, want only 200", n, code)
		}
	}
	_, metrics, _ := get(t, plainClient, "http://"+e.admin+"/metrics")
	if v := metricValue(metrics, `outrider_proxy_upstream_restart_waits_total{result="recovered"}`); v == 0 {
		t.Errorf("no request was counted as held and recovered:\n%s", grepLines(metrics, "restart_waits"))
	}
	e.px.waitLog(5*time.Second, "upstream listening again")

	t.Run("wait off, error page", func(t *testing.T) {
		pages := t.TempDir()
		os.WriteFile(filepath.Join(pages, "502.html"), []byte("<h1>back soon</h1>\n"), 0o644)
		e := startProxy(t, "--upstream-wait", "0", "--error-pages", pages)
		e.app.stop()
		code, body, hdr := get(t, e.h1, "https://app.example/")
		if code != http.StatusBadGateway || body != "<h1>back soon</h1>\n" || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") {
			t.Errorf("app down, wait off: %d %q %q, want 502 with the error page", code, body, hdr.Get("Content-Type"))
		}
	})
}

// TestRequestEdgeCases: what real clients send that the old path got wrong.
func TestRequestEdgeCases(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t)
	appAddr := e.app.addr("addr")
	seen := func() []string {
		var s []struct{ Method, Path string }
		getJSON(t, plainClient, "http://"+appAddr+"/-/seen", &s)
		var out []string
		for _, v := range s {
			out = append(out, v.Method+" "+v.Path)
		}
		return out
	}
	raw := func(t *testing.T, alpn []string, req string) (*http.Response, string) {
		t.Helper()
		c, err := tls.Dial("tcp", e.https, &tls.Config{ServerName: "app.example", RootCAs: e.ca.Pool(), NextProtos: alpn})
		if err != nil {
			t.Fatalf("handshake with ALPN %v: %v", alpn, err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, req)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("reading response to %q: %v", req, err)
		}
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	t.Run("http/1.0 only ALPN and no Host", func(t *testing.T) {
		resp, body := raw(t, []string{"http/1.0"}, "GET /echo HTTP/1.0\r\n\r\n")
		var got echo
		if err := json.Unmarshal([]byte(body), &got); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		if got.Host != "app.example" {
			t.Errorf("a Host-less request reached the app as Host %q, want the SNI name app.example", got.Host)
		}
		resp, _ = raw(t, []string{"http/1.0"}, "GET /redirect?to=http://app.example/next HTTP/1.0\r\n\r\n")
		if loc := resp.Header.Get("Location"); loc != "https://app.example/next" {
			t.Errorf("Location for a Host-less request = %q, want https://app.example/next", loc)
		}
	})
	t.Run("CONNECT refused before the app", func(t *testing.T) {
		resp, _ := raw(t, nil, "CONNECT app.example:443 HTTP/1.1\r\nHost: app.example:443\r\n\r\n")
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("CONNECT: %d, want 405", resp.StatusCode)
		}
		for _, s := range seen() {
			if strings.HasPrefix(s, "CONNECT") {
				t.Errorf("the app saw %q", s)
			}
		}
	})
	t.Run("OPTIONS * and absolute-form", func(t *testing.T) {
		resp, _ := raw(t, nil, "OPTIONS * HTTP/1.1\r\nHost: app.example\r\n\r\n")
		if resp.StatusCode != 200 {
			t.Errorf("OPTIONS *: %d, want 200 from outrider", resp.StatusCode)
		}
		_, body := raw(t, nil, "GET https://app.example/echo?x=1;y=2 HTTP/1.1\r\nHost: app.example\r\n\r\n")
		var got struct {
			RequestURI string `json:"request_uri"`
		}
		json.Unmarshal([]byte(body), &got)
		if got.RequestURI != "/echo?x=1;y=2" {
			t.Errorf("absolute-form reached the app as %q, want origin-form /echo?x=1;y=2", got.RequestURI)
		}
		for _, s := range seen() {
			if strings.HasPrefix(s, "OPTIONS") {
				t.Errorf("the app saw %q", s)
			}
		}
	})
	t.Run("underscore look-alikes dropped", func(t *testing.T) {
		_, body := raw(t, nil, "GET /echo HTTP/1.1\r\nHost: app.example\r\nX_Forwarded_For: 6.6.6.6\r\nX_Real_IP: 6.6.6.6\r\nContent_Length: 99\r\nX-Kept: yes\r\n\r\n")
		var got echo
		json.Unmarshal([]byte(body), &got)
		for k := range got.Header {
			if strings.Contains(k, "_") {
				t.Errorf("header %q reached the app", k)
			}
		}
		if got.Header["X-Kept"] == nil || got.Header["X-Real-Ip"][0] == "6.6.6.6" {
			t.Errorf("app headers: %v", got.Header)
		}
		keep := startProxy(t, "--keep-underscore-headers")
		_, body = rawTo(t, keep, "GET /echo HTTP/1.1\r\nHost: app.example\r\nX_Legacy_Token: t\r\n\r\n")
		json.Unmarshal([]byte(body), &got)
		if got.Header["X_legacy_token"] == nil {
			t.Errorf("--keep-underscore-headers: app headers %v, want X_legacy_token", got.Header)
		}
	})
	t.Run("WebDAV Destination with :443 on one side", func(t *testing.T) {
		for _, tt := range []struct{ host, dest, want string }{
			{"app.example", "https://app.example:443/dav/b", "http://app.example/dav/b"},
			{"app.example:443", "https://app.example/dav/b", "http://app.example/dav/b"},
		} {
			_, body := raw(t, nil, "MOVE /echo HTTP/1.1\r\nHost: "+tt.host+"\r\nDestination: "+tt.dest+"\r\n\r\n")
			var got echo
			json.Unmarshal([]byte(body), &got)
			if d := got.Header["Destination"]; len(d) != 1 || d[0] != tt.want {
				t.Errorf("Host %s, Destination %s reached the app as %v, want %s", tt.host, tt.dest, d, tt.want)
			}
		}
	})
	t.Run("103 Early Hints and trailers", func(t *testing.T) {
		for name, c := range map[string]*http.Client{"h1": e.h1, "h2": e.h2} {
			var hints []string
			trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				hints = append(hints, fmt.Sprint(code, " ", h["Link"]))
				return nil
			}}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), "GET", "https://app.example/early-hints", nil)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if len(hints) != 1 || !strings.HasPrefix(hints[0], "103 [</style.css>") || resp.Header.Get("Link") != "" {
				t.Errorf("%s: 1xx seen %v, final Link %q; want one 103 with the Link, none on the 200", name, hints, resp.Header.Get("Link"))
			}
			resp, err = c.Get("https://app.example/trailers")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if got := resp.Trailer.Get("X-Checksum"); got != "abc123" {
				t.Errorf("%s: trailer X-Checksum = %q, want abc123 (trailers %v)", name, got, resp.Trailer)
			}
		}
	})
}

// rawTo sends one raw HTTP/1.1 request to e over TLS and returns the response.
func rawTo(t *testing.T, e *proxyEnv, req string) (*http.Response, string) {
	t.Helper()
	c, err := tls.Dial("tcp", e.https, &tls.Config{ServerName: "app.example", RootCAs: e.ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, req)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestUpstreamConnectionsBounded: twenty HTTP/2 clients with 50 streams
// each never make outrider open more connections to the app than
// --max-upstream-conns; the requests beyond wait and all succeed.
func TestUpstreamConnectionsBounded(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t, "--access-log=false", "--max-upstream-conns", "16")
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 20 {
		c := clientFor(e.https, e.ca.Pool(), true)
		for range 50 {
			wg.Go(func() {
				resp, err := c.Get("https://app.example/slow?delay=50ms")
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			})
		}
	}
	wg.Wait()
	var conns struct{ Open, Peak, Total int }
	getJSON(t, plainClient, "http://"+e.app.addr("addr")+"/-/conns", &conns)
	t.Logf("app connections: %+v", conns)
	if conns.Peak > 16+1 { // +1: this query's own connection
		t.Errorf("the app saw %d connections at once, want at most --max-upstream-conns 16 (+1 for this query)", conns.Peak)
	}
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of 1000 requests failed", n)
	}
	_, metrics, _ := get(t, plainClient, "http://"+e.admin+"/metrics")
	if v := metricValue(metrics, "outrider_proxy_upstream_pool_waits_total"); v == 0 {
		t.Error("no request was counted as waiting for a connection")
	}
}

// TestRequestDifferential: for request targets and header sets that
// real clients send, the app receives through outrider what it receives
// directly, but for the documented forwarding headers.
func TestRequestDifferential(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t)
	appAddr := e.app.addr("addr")
	long := "/echo?" + strings.Repeat("k=v;", 2000)
	tests := []struct {
		name, target string
		headers      []string
	}{
		{"semicolons", "/echo?a=1;b=2", nil},
		{"stray percent", "/echo?q=100%&r=%zz&s=%", nil},
		{"encoded slashes", "/echo/a%2Fb/c%2F?x=%2F", nil},
		{"non-ascii bytes", "/echo/caf\xc3\xa9?n=\xc3\xa9", nil},
		{"plus and spaces", "/echo?q=a+b%20c", nil},
		{"empty query", "/echo?", nil},
		{"very long url", long, nil},
		{"repeated headers", "/echo", []string{"Accept: text/html", "Accept: application/json", "X-Dup: 1", "X-Dup: 2"}},
		{"odd header case", "/echo", []string{"x-lower: a", "X-UPPER: b", "Cookie: a=1; b=2"}},
		{"header with spaces inside", "/echo", []string{"X-Spaces: a  b\tc"}},
		{"authorization kept", "/echo", []string{"Authorization: Basic dTpw"}},
	}
	skip := map[string]bool{"X-Forwarded-For": true, "X-Forwarded-Proto": true, "X-Forwarded-Host": true, "Forwarded": true, "X-Real-Ip": true}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := "GET " + tt.target + " HTTP/1.1\r\nHost: app.example\r\n"
			for _, h := range tt.headers {
				req += h + "\r\n"
			}
			req += "\r\n"
			c, err := net.Dial("tcp", appAddr)
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(c, req)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			direct, _ := io.ReadAll(resp.Body)
			c.Close()
			_, via := rawTo(t, e, req)
			var d, v struct {
				RequestURI string      `json:"request_uri"`
				Header     http.Header `json:"header"`
			}
			if err := json.Unmarshal(direct, &d); err != nil {
				t.Fatalf("direct: %v: %s", err, direct)
			}
			if err := json.Unmarshal([]byte(via), &v); err != nil {
				t.Fatalf("via outrider: %v: %s", err, via)
			}
			if v.RequestURI != d.RequestURI {
				t.Errorf("target through outrider %q, directly %q", v.RequestURI, d.RequestURI)
			}
			for k := range skip {
				delete(v.Header, k)
			}
			if fmt.Sprint(v.Header) != fmt.Sprint(d.Header) {
				t.Errorf("headers through outrider\n%v\ndirectly\n%v", v.Header, d.Header)
			}
		})
	}
}
