package integration

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/outrider-dev/outrider/internal/testcert"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Hostile clients: slowloris, idle keep-alive connections, header floods,
// huge uploads and clients that never read. Each must be cut by a timeout or
// a limit while ordinary requests keep being served, and outrider's memory
// must not grow with the attack.

// raiseNoFile lifts this process's open-file limit to at least n (up to the
// hard limit), for tests that hold thousands of sockets. Children started
// afterwards inherit it.
func raiseNoFile(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n && os.Geteuid() == 0 {
		lim.Max = n
	}
	lim.Cur = min(n, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("raising RLIMIT_NOFILE to %d: %v", n, err)
	}
	if lim.Cur < n {
		t.Skipf("RLIMIT_NOFILE hard limit %d is below the %d this test needs", lim.Max, n)
	}
}

// rssBytes reads a process's current resident set size (VmRSS).
func rssBytes(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// latencyStats summarises request latencies.
type latencyStats struct {
	mu   sync.Mutex
	d    []time.Duration
	errs []string
}

func (s *latencyStats) add(d time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.errs = append(s.errs, err.Error())
		return
	}
	s.d = append(s.d, d)
}

func (s *latencyStats) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := slices.Clone(s.d)
	slices.Sort(d)
	if len(d) == 0 {
		return fmt.Sprintf("no successful request, %d errors", len(s.errs))
	}
	q := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	return fmt.Sprintf("%d ok, %d errors; p50 %v p99 %v max %v",
		len(d), len(s.errs), q(0.5).Round(time.Millisecond), q(0.99).Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond))
}

// probeLoop sends ordinary requests, each on a new connection, every
// interval until stop is closed, and records their latency.
func probeLoop(t *testing.T, e *proxyEnv, interval time.Duration, stop <-chan struct{}) *latencyStats {
	c := clientFor(e.https, e.ca.Pool(), false)
	c.Transport.(*http.Transport).DisableKeepAlives = true
	c.Timeout = 20 * time.Second
	s := &latencyStats{}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	wg.Go(func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			start := time.Now()
			resp, err := c.Get("https://app.example/")
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != 200 {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			s.add(time.Since(start), err)
		}
	})
	return s
}

func (e *proxyEnv) dialTLS(alpn string) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	return tls.DialWithDialer(d, "tcp", e.https, &tls.Config{RootCAs: e.ca.Pool(), ServerName: "app.example", NextProtos: []string{alpn}})
}

// TestSlowlorisAndIdleConnectionsAreCut holds 1,000 slowloris connections
// (headers trickled one line at a time) and 1,000 idle keep-alive TLS
// connections against outrider. Ordinary requests on fresh connections must
// keep succeeding meanwhile, and every hostile connection must be closed by
// the server: slowloris by --header-timeout, idle ones by --idle-timeout.
func TestSlowlorisAndIdleConnectionsAreCut(t *testing.T) {
	skipShort(t)
	raiseNoFile(t, 16384)
	e := startProxy(t, "--header-timeout", "2s", "--idle-timeout", "3s", "--access-log=false")
	const n = 1000

	stop := make(chan struct{})
	probes := probeLoop(t, e, 100*time.Millisecond, stop)

	type result struct {
		held  time.Duration // from the last byte we sent that the server read until it closed
		err   error
		reply string // anything the server sent back
	}
	var open, peak atomic.Int64
	notePeak := func() {
		v := open.Add(1)
		for p := peak.Load(); v > p && !peak.CompareAndSwap(p, v); p = peak.Load() {
		}
	}
	// Handshakes are CPU-bound on both sides: at most 32 are in flight, and
	// a connection holds no slot once its handshake is done.
	run := func(name string, one func(handshaken func()) result) []result {
		res := make([]result, n)
		sem := make(chan struct{}, 32)
		var wg sync.WaitGroup
		start := time.Now()
		for i := range n {
			sem <- struct{}{}
			wg.Go(func() {
				var once sync.Once
				release := func() { once.Do(func() { <-sem }) }
				defer release()
				res[i] = one(release)
			})
		}
		wg.Wait()
		t.Logf("%s: %d connections in %v", name, n, time.Since(start).Round(time.Millisecond))
		return res
	}

	// Slowloris: a request line and one header line per second, never the
	// blank line that ends the headers.
	slowloris := func(handshaken func()) result {
		c, err := e.dialTLS("http/1.1")
		if err != nil {
			return result{err: err}
		}
		defer c.Close()
		handshaken()
		notePeak()
		defer open.Add(-1)
		start := time.Now()
		fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: app.example\r\n")
		closed := make(chan []byte, 1)
		go func() {
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			b, _ := io.ReadAll(c)
			closed <- b
		}()
		for i := 0; ; i++ {
			select {
			case b := <-closed:
				return result{held: time.Since(start), reply: string(b)}
			case <-time.After(time.Second):
				fmt.Fprintf(c, "X-Slow-%d: %d\r\n", i, i)
			}
		}
	}

	// Idle keep-alive: one ordinary request, then silence.
	idleKeepAlive := func(handshaken func()) result {
		c, err := e.dialTLS("http/1.1")
		if err != nil {
			return result{err: err}
		}
		defer c.Close()
		handshaken()
		notePeak()
		defer open.Add(-1)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		br := bufio.NewReader(c)
		fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: app.example\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return result{err: err}
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		start := time.Now()
		b, _ := io.ReadAll(br)
		return result{held: time.Since(start), reply: string(b)}
	}

	// Both attacks at once, so that their connections overlap.
	var slow, idle []result
	var attacks sync.WaitGroup
	attacks.Go(func() { slow = run("slowloris", slowloris) })
	attacks.Go(func() { idle = run("idle keep-alive", idleKeepAlive) })
	attacks.Wait()
	t.Logf("peak %d hostile connections open at once", peak.Load())

	close(stop)
	for _, tc := range []struct {
		name    string
		res     []result
		timeout time.Duration
	}{{"slowloris", slow, 2 * time.Second}, {"idle", idle, 3 * time.Second}} {
		var cut, failed int
		var longest time.Duration
		for _, r := range tc.res {
			if r.err != nil {
				failed++
				continue
			}
			if r.reply != "" && !strings.HasPrefix(r.reply, "HTTP/1.1 408") {
				t.Errorf("%s: server answered %q", tc.name, r.reply)
			}
			longest = max(longest, r.held)
			// Generous: the server may be busy with handshakes, but a
			// connection held 5× past its timeout was not cut by it.
			if r.held < 5*tc.timeout {
				cut++
			}
		}
		t.Logf("%s: %d cut by the server (timeout %v, longest held %v), %d failed to connect",
			tc.name, cut, tc.timeout, longest.Round(time.Millisecond), failed)
		if failed > n/100 {
			t.Errorf("%s: %d of %d connections could not even be opened", tc.name, failed, n)
		}
		if cut < n-failed {
			t.Errorf("%s: only %d of %d connections were cut within 5× the timeout", tc.name, cut, n-failed)
		}
	}
	// Wait for the prober to finish its last request before reading it.
	time.Sleep(200 * time.Millisecond)
	t.Logf("ordinary requests during the attack: %v", probes)
	probes.mu.Lock()
	defer probes.mu.Unlock()
	if len(probes.errs) > 0 {
		t.Errorf("%d ordinary requests failed during the attack, e.g. %s", len(probes.errs), probes.errs[0])
	}
	if len(probes.d) < 10 {
		t.Errorf("only %d ordinary requests completed", len(probes.d))
	}
	for _, d := range probes.d {
		if d > 5*time.Second {
			t.Errorf("an ordinary request took %v during the attack (bound 5s)", d)
			break
		}
	}
}

// TestHeaderFloodRefused sends headers without end over HTTP/1.1 (many
// connections at once) and an endless CONTINUATION sequence over HTTP/2.
// Both must be refused long before the flood ends, and outrider's RSS must
// not grow with the bytes sent.
func TestHeaderFloodRefused(t *testing.T) {
	skipShort(t)
	e := startProxy(t, "--access-log=false")
	pid := e.px.cmd.Process.Pid
	get(t, e.h2, "https://app.example/")
	before := rssBytes(t, pid)
	const floodBytes = 64 << 20 // what each flooder is willing to send

	t.Run("http1", func(t *testing.T) {
		var wg sync.WaitGroup
		var sentMax atomic.Int64
		codes := make([]string, 50)
		for i := range codes {
			wg.Go(func() {
				c, err := e.dialTLS("http/1.1")
				if err != nil {
					codes[i] = err.Error()
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				go func() {
					line := []byte("X-Flood: " + strings.Repeat("f", 100) + "\r\n")
					fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: app.example\r\n")
					var sent int64
					for sent < floodBytes {
						n, err := c.Write(line)
						sent += int64(n)
						if err != nil {
							break
						}
					}
					for v := sentMax.Load(); sent > v && !sentMax.CompareAndSwap(v, sent); v = sentMax.Load() {
					}
				}()
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					codes[i] = "closed: " + err.Error()
					return
				}
				resp.Body.Close()
				codes[i] = resp.Status
			})
		}
		wg.Wait()
		for _, c := range codes {
			if !strings.HasPrefix(c, "431") && !strings.HasPrefix(c, "closed") {
				t.Errorf("header flood answered %q, want 431 or a closed connection", c)
			}
		}
		t.Logf("http1 header flood: answers %q…, most bytes one flooder got written %d KiB", codes[0], sentMax.Load()>>10)
		if sentMax.Load() >= floodBytes {
			t.Errorf("a flooder wrote all %d MiB of headers: never refused", floodBytes>>20)
		}
	})

	t.Run("http2 CONTINUATION", func(t *testing.T) {
		c, err := e.dialTLS("h2")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		fr := startH2(t, c)
		var hb bytes.Buffer
		block := getHeaders(hpack.NewEncoder(&hb), &hb, "/")
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndStream: true}); err != nil {
			t.Fatal(err)
		}
		done := make(chan string, 1)
		var wmu sync.Mutex
		go func() { done <- readUntilClosed(fr, &wmu) }()
		var sent int64
		frag := bytes.Repeat([]byte{0x40, 0x01, 'x', 0x7f, 0x7f}, 3000) // literal headers, never END_HEADERS
		for sent < floodBytes {
			wmu.Lock()
			err := fr.WriteContinuation(1, false, frag)
			wmu.Unlock()
			if err != nil {
				break
			}
			sent += int64(len(frag))
		}
		got := <-done
		t.Logf("http2 CONTINUATION flood: %s after %d KiB", got, sent>>10)
		if sent >= floodBytes {
			t.Errorf("all %d MiB of CONTINUATION frames were accepted", floodBytes>>20)
		}
		if !strings.Contains(got, "GOAWAY") && !strings.Contains(got, "closed") {
			t.Errorf("flood ended with %s, want GOAWAY or a closed connection", got)
		}
	})

	after := rssBytes(t, pid)
	t.Logf("outrider RSS: %d MiB before, %d MiB after the header floods", before>>20, after>>20)
	if after-before > 64<<20 {
		t.Errorf("RSS grew by %d MiB under header floods", (after-before)>>20)
	}
	if code, _, _ := get(t, e.h2, "https://app.example/"); code != 200 {
		t.Errorf("after the floods: %d", code)
	}
}

// startH2 writes the client preface and SETTINGS on a raw TLS connection
// that negotiated h2, and returns a Framer on it.
func startH2(t *testing.T, c *tls.Conn, settings ...http2.Setting) *http2.Framer {
	t.Helper()
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN %q, want h2", p)
	}
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = 1 << 20
	if err := fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	return fr
}

// getHeaders encodes the header block of a GET for path on app.example.
// enc and hb may be reused across calls.
func getHeaders(enc *hpack.Encoder, hb *bytes.Buffer, path string) []byte {
	hb.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "app.example"}, {":path", path}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return hb.Bytes()
}

// readUntilClosed reads frames until a GOAWAY or the end of the connection,
// acknowledging SETTINGS, and describes how it ended. A Framer's writes are
// not safe for concurrent use: writers elsewhere must hold wmu too.
func readUntilClosed(fr *http2.Framer, wmu *sync.Mutex) string {
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return "closed (" + err.Error() + ")"
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			return "GOAWAY " + f.ErrCode.String()
		case *http2.SettingsFrame:
			if !f.IsAck() {
				wmu.Lock()
				fr.WriteSettingsAck()
				wmu.Unlock()
			}
		}
	}
}

// zeros is an endless reader of zero bytes, up to a limit: a 10 GiB upload
// without 10 GiB in memory.
type zeros struct{ left int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.left <= 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), z.left))
	clear(p[:n])
	z.left -= int64(n)
	return n, nil
}

// TestHugeUploadRefused sends 10 GiB bodies to an outrider with
// --max-body-bytes 1 MiB: declared with Content-Length over HTTP/1.1 and
// HTTP/2, and chunked. Each must be answered 413 (or cut) after a few MiB at
// most, none may reach the app whole, and outrider's RSS must stay flat.
func TestHugeUploadRefused(t *testing.T) {
	skipShort(t)
	e := startProxy(t, "--max-body-bytes", "1048576", "--access-log=false")
	pid := e.px.cmd.Process.Pid
	const huge = 10 << 30

	// Under the limit it still passes.
	resp, err := e.h1.Post("https://app.example/upload", "application/octet-stream", &zeros{left: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("1 MiB upload: %d, want 200", resp.StatusCode)
	}
	before := rssBytes(t, pid)
	var peak int64

	cases := []struct {
		name    string
		client  *http.Client
		chunked bool
	}{
		{"http1 content-length", e.h1, false},
		{"http1 chunked", e.h1, true},
		{"http2 content-length", e.h2, false},
		{"http2 no length", e.h2, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := &countingReader{r: &zeros{left: huge}}
			req, _ := http.NewRequest(http.MethodPost, "https://app.example/upload", body)
			if tc.chunked {
				req.ContentLength = -1 // unknown length: chunked on HTTP/1.1
			} else {
				req.ContentLength = huge
			}
			start := time.Now()
			resp, err := tc.client.Do(req)
			code := 0
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				code = resp.StatusCode
			}
			sent := body.n.Load()
			peak = max(peak, rssBytes(t, pid))
			t.Logf("%s: %d (%v) after %d MiB sent in %v", tc.name, code, err, sent>>20, time.Since(start).Round(time.Millisecond))
			if err == nil && code != http.StatusRequestEntityTooLarge {
				t.Errorf("answered %d, want 413", code)
			}
			if sent >= huge {
				t.Errorf("all 10 GiB were sent: the limit did not stop the upload")
			}
		})
	}
	var seen []struct {
		Path          string
		ContentLength int64 `json:"content_length"`
	}
	getJSON(t, plainClient, "http://"+e.app.addr("addr")+"/-/seen", &seen)
	for _, s := range seen {
		if s.ContentLength > 1<<20 {
			t.Errorf("a %d-byte upload reached the app", s.ContentLength)
		}
	}
	t.Logf("outrider RSS: %d MiB before, peak %d MiB during 10 GiB uploads", before>>20, peak>>20)
	if peak-before > 64<<20 {
		t.Errorf("RSS grew by %d MiB during the uploads: bodies were buffered", (peak-before)>>20)
	}
	if code, _, _ := get(t, e.h2, "https://app.example/"); code != 200 {
		t.Errorf("after the uploads: %d", code)
	}
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestNeverReadingHTTP2ClientCut opens an HTTP/2 stream for a 256 MiB
// response and never grants flow-control window beyond the initial 64 KiB:
// outrider must reset the stream (or close the connection) after
// --idle-timeout instead of holding it and its upstream request forever.
// The HTTP/1.1 variant is TestIdleTimeouts/client_that_never_reads_is_cut.
func TestNeverReadingHTTP2ClientCut(t *testing.T) {
	skipShort(t)
	e := startProxy(t, "--idle-timeout", "2s", "--access-log=false")
	c, err := e.dialTLS("h2")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fr := startH2(t, c)
	var hb bytes.Buffer
	block := getHeaders(hpack.NewEncoder(&hb), &hb, "/big?size=268435456")
	start := time.Now()
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	var data int
	var ended string
	for ended == "" {
		f, err := fr.ReadFrame()
		if err != nil {
			ended = "connection closed"
			break
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.DataFrame:
			data += len(f.Data())
		case *http2.RSTStreamFrame:
			ended = "RST_STREAM " + f.ErrCode.String()
		case *http2.GoAwayFrame:
			ended = "GOAWAY " + f.ErrCode.String()
		}
	}
	d := time.Since(start)
	t.Logf("never-reading h2 client: %s after %v, %d KiB of DATA received", ended, d.Round(time.Millisecond), data>>10)
	if d > 20*time.Second {
		t.Errorf("stream held %v, want cut after about 2s", d)
	}
	if data >= 268435456 {
		t.Error("the whole body was sent without window updates")
	}
}

// TestLandlockConfinesFileAccess treats outrider itself as the hostile
// party: with --landlock, a path outside its storage and certificate
// directories must be unreadable even when its own configuration leads
// there. The certificate file is swapped for a symlink to a valid
// certificate in a directory outside the sandbox; the reload must fail with
// a permission error and the old certificate stay in service. Without
// --landlock the same swap succeeds, so the refusal is Landlock's.
func TestLandlockConfinesFileAccess(t *testing.T) {
	skipShort(t)
	serial := func(e *proxyEnv) string {
		c, err := e.dialTLS("http/1.1")
		if err != nil {
			return "dial: " + err.Error()
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	// swapOutside points cert.pem and key.pem at a fresh leaf in a
	// directory outside the sandbox, then asks for a reload.
	swapOutside := func(t *testing.T, e *proxyEnv) {
		outside := t.TempDir()
		c, k := e.ca.Leaf(t, time.Now().Add(24*time.Hour), "app.example", "localhost", "127.0.0.1")
		os.WriteFile(outside+"/cert.pem", c, 0o644)
		os.WriteFile(outside+"/key.pem", k, 0o600)
		for _, f := range []struct{ link, target string }{{e.keyFile, outside + "/key.pem"}, {e.certFile, outside + "/cert.pem"}} {
			os.Symlink(f.target, f.link+".tmp")
			if err := os.Rename(f.link+".tmp", f.link); err != nil {
				t.Fatal(err)
			}
		}
		e.px.signal(syscall.SIGHUP)
	}

	t.Run("without landlock the swap is served", func(t *testing.T) {
		e := startProxy(t, "--storage", t.TempDir())
		before := serial(e)
		swapOutside(t, e)
		waitFor(t, 10*time.Second, func() error {
			if now := serial(e); now == before || strings.HasPrefix(now, "dial") {
				return fmt.Errorf("still serving %s", now)
			}
			return nil
		})
	})

	t.Run("with landlock the outside file is refused", func(t *testing.T) {
		e := startProxy(t, "--storage", t.TempDir(), "--landlock")
		t.Logf("%s", e.px.waitLog(time.Second, `"msg":"landlock applied"`))
		before := serial(e)
		// Inside the sandbox, a reload still works.
		c, k := e.ca.Leaf(t, time.Now().Add(24*time.Hour), "app.example", "localhost", "127.0.0.1")
		os.WriteFile(e.keyFile, k, 0o600)
		os.WriteFile(e.certFile, c, 0o644)
		e.px.signal(syscall.SIGHUP)
		var inside string
		waitFor(t, 10*time.Second, func() error {
			if inside = serial(e); inside == before || strings.HasPrefix(inside, "dial") {
				return fmt.Errorf("still serving %s", inside)
			}
			return nil
		})
		swapOutside(t, e)
		line := e.px.waitLog(10*time.Second, "certificate reload failed")
		t.Logf("%s", line)
		if !strings.Contains(line, "permission denied") {
			t.Errorf("reload failed, but not for lack of permission: %s", line)
		}
		if now := serial(e); now != inside {
			t.Errorf("serving %s after the refused swap, want %s", now, inside)
		}
		if code, _, _ := get(t, e.h2, "https://app.example/"); code != 200 {
			t.Errorf("requests after the refused swap: %d", code)
		}
	})

	t.Run("exec notifiers refused", func(t *testing.T) {
		p := start(t, procSpec{name: "outrider landlock exec", bin: bins.outrider, noReady: true, exitCode: 2,
			args: []string{"proxy", "--upstream", "http://127.0.0.1:1", "--landlock", "--configsync-source", "http://127.0.0.1:1/c",
				"--configsync-dir", t.TempDir(), "--configsync-notify", "exec:/bin/true"}})
		p.stopped = true
		if code := p.wait(20 * time.Second); code != 2 || !strings.Contains(p.output(), "--landlock cannot be combined") {
			t.Errorf("exit %d, output %q; want 2 and a clear refusal", code, p.output())
		}
	})
}

// TestMaxConnsKeepsRoomForNewClients: more idle keep-alive connections than
// the file descriptor limit allows (issue #16). outrider caps client
// connections below the limit (--max-conns derived from RLIMIT_NOFILE) and
// closes the longest-idle one for each newcomer, so a new client is still
// served instead of accept failing with EMFILE.
func TestMaxConnsKeepsRoomForNewClients(t *testing.T) {
	skipShort(t)
	t.Parallel()
	prlimit := needTool(t, "prlimit")
	raiseNoFile(t, 4096)
	e := &proxyEnv{ca: testcert.NewCA(t)}
	e.certFile, e.keyFile = e.ca.LeafFiles(t, t.TempDir(), "app.example", "localhost", "127.0.0.1")
	e.app = startApp(t)
	const nofile = 600
	e.px = start(t, procSpec{name: "outrider proxy (nofile 600)", bin: prlimit, args: []string{
		fmt.Sprintf("--nofile=%d:%d", nofile, nofile), bins.outrider, "proxy", "--log-format=json",
		"--listen", "127.0.0.1:0", "--http-listen", "", "--admin-listen", "127.0.0.1:0", "--access-log=false",
		"--upstream", "http://" + e.app.addr("addr"), "--cert", e.certFile, "--key", e.keyFile}})
	e.https, e.admin = e.px.addr("https_addr"), e.px.addr("admin_addr")
	maxConns, _ := e.px.ready["max_conns"].(float64)
	if maxConns <= 0 || maxConns >= nofile {
		t.Fatalf("max_conns = %v with RLIMIT_NOFILE %d, want a cap below the limit", maxConns, nofile)
	}
	// Open more idle keep-alive connections than the process has descriptors.
	const n = nofile + 100
	var mu sync.Mutex
	var conns []*tls.Conn
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := tls.Dial("tcp", e.https, &tls.Config{RootCAs: e.ca.Pool(), ServerName: "app.example", NextProtos: []string{"http/1.1"}})
			if err != nil {
				return // refused while none was idle yet: fine
			}
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: app.example\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		})
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// A new client is served.
	c := clientFor(e.https, e.ca.Pool(), false)
	if code, _, _ := get(t, c, "https://app.example/"); code != 200 {
		t.Fatalf("a new client after %d idle connections got %d, want 200", n, code)
	}
	_, metrics, _ := get(t, plainClient, "http://"+e.admin+"/metrics")
	evicted := metricValue(metrics, "outrider_proxy_connections_evicted_total")
	if evicted < n-maxConns {
		t.Errorf("%v idle connections evicted for %d newcomers over a cap of %v", evicted, n, maxConns)
	}
	t.Logf("max_conns %v, %d connections opened, %v evicted, %v refused", maxConns, n, evicted,
		metricValue(metrics, "outrider_proxy_connections_refused_total"))
}

// TestHTTP2EmptyFramesFloodClosed: a stream flooded with DATA frames that
// carry nothing (CVE-2019-9518) costs the server as much as real frames;
// the connection is closed after a thousand, as the rapid-reset guard does,
// and ordinary clients are served meanwhile (issue #16).
func TestHTTP2EmptyFramesFloodClosed(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t, "--access-log=false")
	for _, tt := range []struct {
		name  string
		flood func(fr *http2.Framer) error
	}{
		{"empty DATA", func(fr *http2.Framer) error { return fr.WriteData(1, false, nil) }},
		{"zero WINDOW_UPDATE", func(fr *http2.Framer) error { // the Framer refuses to write these itself
			return fr.WriteRawFrame(http2.FrameWindowUpdate, 0, 1, []byte{0, 0, 0, 0})
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := e.dialTLS("h2")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fr := startH2(t, c)
			var hb bytes.Buffer
			enc := hpack.NewEncoder(&hb)
			hb.Reset()
			for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", "app.example"}, {":path", "/upload"}} {
				enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
			}
			var wmu sync.Mutex
			wmu.Lock()
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
			wmu.Unlock()
			result := make(chan string, 1)
			go func() { result <- readUntilClosed(fr, &wmu) }()
			sent := 0
			for ; sent < 1_000_000; sent++ {
				wmu.Lock()
				err := tt.flood(fr)
				wmu.Unlock()
				if err != nil {
					break // the server closed the connection
				}
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			got := <-result
			if sent == 1_000_000 {
				t.Fatalf("a million frames that carry nothing were accepted; the connection ended with %s", got)
			}
			t.Logf("connection ended after %d frames: %s", sent, got)
			if code, _, _ := get(t, e.h2, "https://app.example/"); code != 200 {
				t.Errorf("an ordinary client got %d meanwhile", code)
			}
		})
	}
	_, metrics, _ := get(t, plainClient, "http://"+e.admin+"/metrics")
	if v := metricValue(metrics, "outrider_proxy_empty_frame_closes_total"); v < 2 {
		t.Errorf("outrider_proxy_empty_frame_closes_total = %v, want 2", v)
	}
}
