package integration

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outrider-dev/outrider/internal/testcert"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// HTTP/3 end to end: quic-go's own client against the outrider binary.

// h3Addr returns the proxy's HTTP/3 (UDP) address from its listening line.
func (e *proxyEnv) h3Addr(t *testing.T) string {
	t.Helper()
	return e.px.addr("http3_addr")
}

// h3Client returns an HTTP/3 client that reaches the proxy whatever the URL's
// host, trusting the test CA. Close its transport in t.Cleanup.
func (e *proxyEnv) h3Client(t *testing.T) (*http.Client, *http3.Transport) {
	t.Helper()
	addr := e.h3Addr(t)
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: e.ca.Pool()},
		Dial: func(ctx context.Context, _ string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
			return quic.DialAddr(ctx, addr, tlsCfg, cfg)
		},
	}
	t.Cleanup(func() { tr.Close() })
	return &http.Client{Transport: tr, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, tr
}

// h3TLS is a client TLS config for raw QUIC connections to the proxy.
func (e *proxyEnv) h3TLS() *tls.Config {
	return &tls.Config{RootCAs: e.ca.Pool(), ServerName: "app.example", NextProtos: []string{http3.NextProtoH3}}
}

// dialH3 opens a raw HTTP/3 client connection to the proxy.
func (e *proxyEnv) dialH3(t *testing.T) *http3.ClientConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	qc, err := quic.DialAddr(ctx, e.h3Addr(t), e.h3TLS(), nil)
	if err != nil {
		t.Fatalf("QUIC dial: %v", err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	return (&http3.Transport{}).NewClientConn(qc)
}

func TestHTTP3ServesTheSameRequestPath(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t, "--max-body-bytes", "1000", "--domain", "app.example")
	h3, _ := e.h3Client(t)
	_, port, _ := net.SplitHostPort(e.h3Addr(t))

	t.Run("GET over h3 with forwarding headers", func(t *testing.T) {
		resp, err := h3.Get("https://app.example/echo?x=1")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got echo
		json.NewDecoder(resp.Body).Decode(&got)
		if resp.StatusCode != 200 || resp.Proto != "HTTP/3.0" {
			t.Fatalf("GET = %d %s, want 200 HTTP/3.0", resp.StatusCode, resp.Proto)
		}
		if got.Method != "GET" || got.Host != "app.example" || got.Proto != "HTTP/1.1" {
			t.Errorf("app saw %s %s %s, want GET app.example HTTP/1.1", got.Method, got.Host, got.Proto)
		}
		if xf := got.Header["X-Forwarded-Proto"]; len(xf) != 1 || xf[0] != "https" {
			t.Errorf("X-Forwarded-Proto = %q", xf)
		}
		if xf := got.Header["X-Forwarded-For"]; len(xf) != 1 || xf[0] != "127.0.0.1" {
			t.Errorf("X-Forwarded-For = %q", xf)
		}
		// HTTP/3 has no header for "no body": a GET must still reach the app
		// as one without a body, not as a chunked one.
		if len(got.TransferEncoding) != 0 || got.ContentLength != 0 {
			t.Errorf("GET reached the app with Transfer-Encoding %q, Content-Length %d", got.TransferEncoding, got.ContentLength)
		}
		if v := resp.Header.Get("Alt-Svc"); v != "" {
			t.Errorf("HTTP/3 response carries Alt-Svc %q", v)
		}
	})

	t.Run("Alt-Svc on HTTP/1.1 and HTTP/2", func(t *testing.T) {
		// The port the client reached, as its Host says: the bound one
		// here, 443 (a load balancer's) when Host names none.
		for host, want := range map[string]string{"app.example:" + port: `h3=":` + port + `"`, "app.example": `h3=":443"`} {
			for _, c := range []*http.Client{e.h1, e.h2} {
				_, _, hdr := get(t, c, "https://"+host+"/")
				if v := hdr.Get("Alt-Svc"); !strings.HasPrefix(v, want+";") {
					t.Errorf("Host %s: Alt-Svc = %q, want %s; ma=…", host, v, want)
				}
			}
		}
	})

	t.Run("trailers and early hints", func(t *testing.T) {
		resp, err := h3.Get("https://app.example/trailers")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if got := resp.Trailer.Get("X-Checksum"); got != "abc123" {
			t.Errorf("trailer X-Checksum = %q, want abc123", got)
		}
		code, body, _ := get(t, h3, "https://app.example/early-hints")
		if code != 200 || body != "after the hints\n" {
			t.Errorf("GET /early-hints = %d %q", code, body)
		}
	})

	t.Run("legacy rewrites", func(t *testing.T) {
		resp, err := h3.Get("https://app.example/redirect?to=http://app.example/next")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); loc != "https://app.example/next" {
			t.Errorf("Location = %q, want https://app.example/next", loc)
		}
		resp, err = h3.Get("https://app.example/cookie")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for _, c := range resp.Header["Set-Cookie"] {
			if !strings.Contains(c, "Secure") {
				t.Errorf("Set-Cookie without Secure: %q", c)
			}
		}
	})

	t.Run("body limit", func(t *testing.T) {
		resp, err := h3.Post("https://app.example/upload", "application/octet-stream", strings.NewReader(strings.Repeat("x", 2000)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("2000-byte POST with --max-body-bytes 1000 = %d, want 413", resp.StatusCode)
		}
		// Streamed, with no Content-Length to refuse it by: cut at the limit.
		resp, err = h3.Post("https://app.example/upload", "application/octet-stream", struct{ io.Reader }{strings.NewReader(strings.Repeat("x", 2000))})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("streamed 2000-byte POST with --max-body-bytes 1000 = %d, want 413", resp.StatusCode)
		}
	})

	t.Run("unknown name", func(t *testing.T) {
		// The certificate's name in TLS, another in :authority.
		if code, _, _ := get(t, h3, "https://app.example/", "Host", "other.example"); code != http.StatusMisdirectedRequest {
			t.Errorf("GET with :authority other.example = %d, want 421", code)
		}
	})

	t.Run("access log and metrics by protocol", func(t *testing.T) {
		line := e.px.waitLog(10*time.Second, `"proto":"HTTP/3.0"`)
		if !strings.Contains(line, `"msg":"request"`) {
			t.Errorf("access log line: %s", line)
		}
		_, metrics, _ := get(t, plainClient, "http://"+e.admin+"/metrics")
		for _, series := range []string{
			`outrider_proxy_requests_total{code="200",method="GET",proto="http3"}`,
			`outrider_proxy_requests_total{code="200",method="GET",proto="http2"}`,
			`outrider_proxy_requests_total{code="200",method="GET",proto="http1"}`,
		} {
			if metricValue(metrics, series) < 1 {
				t.Errorf("/metrics lacks %s:\n%s", series, grepLines(metrics, "requests_total"))
			}
		}
	})
}

func TestHTTP3LargeStreamedPOST(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t)
	h3, _ := e.h3Client(t)
	const size = 32 << 20
	// No Content-Length: the body streams, the app sees it chunked.
	src := io.LimitReader(rand.Reader, size)
	sum := sha256.New()
	body := struct{ io.Reader }{io.TeeReader(src, sum)}
	resp, err := h3.Post("https://app.example/upload", "application/octet-stream", body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Bytes  int64  `json:"bytes"`
		SHA256 string `json:"sha256"`
	}
	json.NewDecoder(resp.Body).Decode(&got)
	if resp.StatusCode != 200 || got.Bytes != size || got.SHA256 != hex.EncodeToString(sum.Sum(nil)) {
		t.Errorf("POST 32 MiB = %d, app got %d bytes %s, want %d %x", resp.StatusCode, got.Bytes, got.SHA256, size, sum.Sum(nil))
	}
}

func TestHTTP3ServerSentEvents(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t)
	h3, _ := e.h3Client(t)
	resp, err := h3.Get("https://app.example/sse?n=3&interval=300ms")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("GET /sse = %d %q", resp.StatusCode, ct)
	}
	sc := bufio.NewScanner(resp.Body)
	var at []time.Time
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") {
			at = append(at, time.Now())
		}
	}
	if len(at) != 3 {
		t.Fatalf("got %d events, want 3 (%v)", len(at), sc.Err())
	}
	// Each event arrives as it is sent, not all at the end.
	if gap := at[2].Sub(at[0]); gap < 400*time.Millisecond {
		t.Errorf("events arrived %v apart: buffered, not streamed", gap)
	}
}

func TestHTTP3CertificateRotationDuringOpenConnection(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t)
	h3, _ := e.h3Client(t)
	serialOf := func(c *http.Client) string {
		t.Helper()
		resp, err := c.Get("https://app.example/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.TLS == nil {
			t.Fatalf("GET = %d, TLS %v", resp.StatusCode, resp.TLS != nil)
		}
		return resp.TLS.PeerCertificates[0].SerialNumber.String()
	}
	before := serialOf(h3)
	c, k := e.ca.Leaf(t, time.Now().Add(24*time.Hour), "app.example", "localhost", "127.0.0.1")
	dir := filepath.Dir(e.certFile)
	os.WriteFile(filepath.Join(dir, "cert.pem.tmp"), c, 0o644)
	os.WriteFile(filepath.Join(dir, "key.pem.tmp"), k, 0o600)
	os.Rename(filepath.Join(dir, "key.pem.tmp"), e.keyFile)
	os.Rename(filepath.Join(dir, "cert.pem.tmp"), e.certFile)
	var after string
	waitFor(t, 15*time.Second, func() error {
		fresh, _ := e.h3Client(t)
		if after = serialOf(fresh); after == before {
			return fmt.Errorf("a new HTTP/3 connection still gets certificate %s", after)
		}
		return nil
	})
	// The connection opened before the rotation goes on with its own.
	if got := serialOf(h3); got != before {
		t.Errorf("the open HTTP/3 connection now reports certificate %s, want %s", got, before)
	}
}

func TestHTTP3GracefulShutdown(t *testing.T) {
	skipShort(t)
	e := startProxy(t, "--shutdown-timeout", "10s")
	h3, _ := e.h3Client(t)
	if code, _, _ := get(t, h3, "https://app.example/"); code != 200 {
		t.Fatalf("GET = %d", code)
	}
	slow := getAsync(h3, "https://app.example/slow?delay=1500ms")
	e.waitAppSaw(t, "/slow")
	start := time.Now()
	e.px.signal(os.Interrupt)
	r := <-slow
	if r.err != nil || r.code != 200 || r.body != "slow response done\n" {
		t.Errorf("in-flight HTTP/3 request during shutdown = %d %q, %v", r.code, r.body, r.err)
	}
	if code := e.px.wait(15 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	e.px.stopped = true
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("shutdown took %v with nothing left in flight", d)
	}
}

// quicInitial builds a QUIC v1 Initial packet with a random destination
// connection ID and no token, padded to 1200 bytes (RFC 9000 §14.1). Its
// payload is not a real ClientHello: a server decides on Retry from the
// header alone, before it decrypts anything.
func quicInitial() []byte {
	p := []byte{0xc0, 0, 0, 0, 1} // long header, Initial, version 1
	dcid := make([]byte, 8)
	rand.Read(dcid)
	p = append(p, byte(len(dcid)))
	p = append(p, dcid...)
	p = append(p, 8, 1, 2, 3, 4, 5, 6, 7, 8) // source connection ID
	p = append(p, 0)                         // token length
	rest := 1200 - len(p) - 2
	p = append(p, 0x40|byte(rest>>8), byte(rest)) // length, 2-byte varint
	pad := make([]byte, rest)
	rand.Read(pad)
	return append(p, pad...)
}

func TestHTTP3InitialFloodAnsweredWithRetry(t *testing.T) {
	skipShort(t)
	e := startProxy(t)
	target, err := net.ResolveUDPAddr("udp", e.h3Addr(t))
	if err != nil {
		t.Fatal(err)
	}
	// Each Initial from its own source port, as a spoofed flood looks:
	// none will ever complete a handshake.
	const n = 600
	socks := make([]*net.UDPConn, 0, n)
	defer func() {
		for _, s := range socks {
			s.Close()
		}
	}()
	for range n {
		s, err := net.DialUDP("udp", nil, target)
		if err != nil {
			t.Fatal(err)
		}
		socks = append(socks, s)
		s.Write(quicInitial())
	}
	var retries, others atomic.Int64
	var wg sync.WaitGroup
	for _, s := range socks {
		wg.Go(func() {
			buf := make([]byte, 2048)
			s.SetReadDeadline(time.Now().Add(time.Second))
			n, err := s.Read(buf)
			switch {
			case err != nil:
			case n > 0 && buf[0]&0xf0 == 0xf0: // long header, type Retry
				retries.Add(1)
			default:
				others.Add(1)
			}
		})
	}
	wg.Wait()
	_, metrics, _ := get(t, plainClient, "http://"+e.admin+"/metrics")
	// The first quicConnsPerIP/2 (64) from one address go without a Retry;
	// the rest are all refused state. quic-go sends Retries from a short
	// queue and drops the rest of a burst: a flood costs it nothing more.
	if v := metricValue(metrics, "outrider_proxy_quic_retries_total"); v < n-64 {
		t.Errorf("outrider_proxy_quic_retries_total = %v after %d Initials, want ≥ %d", v, n, n-64)
	}
	if retries.Load() == 0 || others.Load() != 0 {
		t.Errorf("the flood got %d Retries and %d other answers back, want only Retries", retries.Load(), others.Load())
	}
	// Paced, every further unvalidated Initial is answered with a Retry.
	for i := range 20 {
		s, err := net.DialUDP("udp", nil, target)
		if err != nil {
			t.Fatal(err)
		}
		s.Write(quicInitial())
		s.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 2048)
		n, err := s.Read(buf)
		s.Close()
		if err != nil || n == 0 || buf[0]&0xf0 != 0xf0 {
			t.Fatalf("Initial %d after the flood: %d bytes (%x…), %v; want a Retry", i, n, buf[:min(n, 4)], err)
		}
	}
	// A real client still gets in (through a Retry if need be).
	h3, _ := e.h3Client(t)
	if code, _, _ := get(t, h3, "https://app.example/"); code != 200 {
		t.Errorf("GET after the flood = %d", code)
	}
}

func TestHTTP3EndlessStreamOpenerIsCapped(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	qc, err := quic.DialAddr(ctx, e.h3Addr(t), e.h3TLS(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	// Streams that never send a request: the client may open only as many
	// as the server grants, however many it tries.
	opened := 0
	for opened < 10000 {
		str, err := qc.OpenStream()
		if err != nil {
			if !errors.Is(err, &quic.StreamLimitReachedError{}) {
				t.Fatalf("after %d streams: %v, want a stream limit", opened, err)
			}
			break
		}
		str.Write([]byte{0x01}) // a HEADERS frame type, and nothing more
		opened++
	}
	if opened != 100 {
		t.Errorf("opened %d streams, want the cap of 100", opened)
	}
	wctx, wcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer wcancel()
	if _, err := qc.OpenStreamSync(wctx); err == nil {
		t.Error("a stream beyond the cap was granted while the others stay open")
	}
	// Everyone else is served meanwhile.
	h3, _ := e.h3Client(t)
	if code, _, _ := get(t, h3, "https://app.example/"); code != 200 {
		t.Errorf("GET from another client = %d", code)
	}
}

// initialOnly drops every datagram a QUIC client sends that carries
// anything but Initial packets, so that the server never sees the client's
// address validated (RFC 9000 §8.1), and counts the bytes each way.
type initialOnly struct {
	net.PacketConn
	sent, received atomic.Int64
}

func (c *initialOnly) WriteTo(p []byte, addr net.Addr) (int, error) {
	if !onlyInitialPackets(p) {
		return len(p), nil
	}
	c.sent.Add(int64(len(p)))
	return c.PacketConn.WriteTo(p, addr)
}

func (c *initialOnly) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := c.PacketConn.ReadFrom(p)
	c.received.Add(int64(n))
	return n, addr, err
}

// onlyInitialPackets walks the coalesced packets of a datagram.
func onlyInitialPackets(d []byte) bool {
	for len(d) > 0 {
		typ := d[0] >> 4 & 0x3
		if d[0]&0x80 == 0 || typ != 0 || len(d) < 7 {
			return false // a short header (1-RTT), or Handshake, 0-RTT, Retry
		}
		i := 5
		i += 1 + int(d[i]) // destination connection ID
		if i >= len(d) {
			return false
		}
		i += 1 + int(d[i]) // source connection ID
		if i >= len(d) {
			return false
		}
		n, w := quicVarint(d[i:]) // token
		i += w + int(n)
		n, w = quicVarint(d[min(i, len(d)):])
		if w == 0 {
			return false
		}
		i += w + int(n)
		if i > len(d) {
			return false
		}
		d = d[i:]
	}
	return true
}

// quicVarint decodes a QUIC variable-length integer (RFC 9000 §16).
func quicVarint(b []byte) (uint64, int) {
	if len(b) == 0 {
		return 0, 0
	}
	w := 1 << (b[0] >> 6)
	if len(b) < w {
		return 0, 0
	}
	v := uint64(b[0] & 0x3f)
	for _, x := range b[1:w] {
		v = v<<8 | uint64(x)
	}
	return v, w
}

func TestHTTP3AmplificationLimit(t *testing.T) {
	skipShort(t)
	e := startProxy(t)
	t.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true") // initialOnly is not a *net.UDPConn
	target, _ := net.ResolveUDPAddr("udp", e.h3Addr(t))
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &initialOnly{PacketConn: pc}
	tr := &quic.Transport{Conn: c}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	// The client may think its handshake done (it has the server's
	// Finished); the server never hears more than Initials. Watch what it
	// sends, retransmissions included, until ctx is done.
	if qc, err := tr.Dial(ctx, target, e.h3TLS(), nil); err == nil {
		defer qc.CloseWithError(0, "")
	}
	<-ctx.Done()
	sent, got := c.sent.Load(), c.received.Load()
	// quic-go checks the budget before each packet (sent < 3 × received),
	// so the last one may pass it by up to one packet.
	const onePacket = 1500
	if sent == 0 || got == 0 || got > 3*sent+onePacket {
		t.Errorf("server sent %d bytes to an unvalidated address that sent %d; want at most 3× (RFC 9000 §8.1)", got, sent)
	}
	t.Logf("unvalidated client sent %d bytes, server answered %d (%.2f×)", sent, got, float64(got)/float64(sent))
}

func TestHTTP3ConnectionsPerClientCapped(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t)
	target, _ := net.ResolveUDPAddr("udp", e.h3Addr(t))
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: pc}
	defer tr.Close()
	tlsCfg := e.h3TLS()
	dial := func() (*quic.Conn, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		return tr.Dial(ctx, target, tlsCfg, nil)
	}
	// One address may hold 128 connections (past 64, each proves its
	// address with a Retry first, which quic-go's client answers).
	var conns []*quic.Conn
	for i := range 128 {
		c, err := dial()
		if err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		conns = append(conns, c)
	}
	if c, err := dial(); err == nil {
		c.CloseWithError(0, "")
		t.Fatal("connection 129 from one address was accepted")
	}
	// One closed makes room for another.
	conns[0].CloseWithError(0, "")
	waitFor(t, 10*time.Second, func() error {
		c, err := dial()
		if err != nil {
			return err
		}
		conns[0] = c
		return nil
	})
	for _, c := range conns {
		c.CloseWithError(0, "")
	}
	_, metrics, _ := get(t, plainClient, "http://"+e.admin+"/metrics")
	if v := metricValue(metrics, "outrider_proxy_quic_refused_total"); v < 1 {
		t.Errorf("outrider_proxy_quic_refused_total = %v, want ≥ 1", v)
	}
}

func TestHTTP3IdleConnectionClosed(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t, "--idle-timeout", "1s")
	cc := e.dialH3(t)
	req, _ := http.NewRequest(http.MethodGet, "https://app.example/", nil)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	start := time.Now()
	select {
	case <-cc.Context().Done():
		if d := time.Since(start); d < 500*time.Millisecond {
			t.Errorf("idle connection closed after %v, before --idle-timeout 1s", d)
		}
	case <-time.After(10 * time.Second):
		t.Error("idle HTTP/3 connection still open 10s after --idle-timeout 1s")
	}
}

func TestHTTP3OffAndBadInput(t *testing.T) {
	skipShort(t)
	t.Parallel()
	t.Run("--http3=false", func(t *testing.T) {
		e := startProxy(t, "--http3=false")
		if v, _ := e.px.ready["http3_addr"].(string); v != "" {
			t.Errorf("http3_addr %q with --http3=false", v)
		}
		if _, _, hdr := get(t, e.h2, "https://app.example/"); hdr.Get("Alt-Svc") != "" {
			t.Errorf("Alt-Svc %q with HTTP/3 off", hdr.Get("Alt-Svc"))
		}
	})
	oneLine := func(t *testing.T, code int, want string, args ...string) {
		t.Helper()
		p := start(t, procSpec{name: "outrider", bin: bins.outrider, args: args, noReady: true, exitCode: code})
		p.stopped = true
		if got := p.wait(20 * time.Second); got != code {
			t.Errorf("exit code %d, want %d", got, code)
		}
		// The error is the last line (log lines may come before it).
		out := strings.TrimSpace(p.output())
		last := out[strings.LastIndex(out, "\n")+1:]
		if !strings.HasPrefix(last, "outrider proxy: ") || !strings.Contains(last, want) || strings.Contains(out, "goroutine") {
			t.Errorf("want an error line naming %q, got:\n%s", want, out)
		}
	}
	t.Run("not a boolean", func(t *testing.T) {
		oneLine(t, 2, "--http3", "proxy", "--http3=maybe", "--upstream", "http://127.0.0.1:1")
	})
	t.Run("UDP port taken", func(t *testing.T) {
		udp, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer udp.Close()
		ca := testcert.NewCA(t)
		cf, kf := ca.LeafFiles(t, t.TempDir(), "app.example")
		oneLine(t, 1, "--http3=false", "proxy", "--listen", udp.LocalAddr().String(), "--http-listen", "",
			"--admin-listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:1", "--cert", cf, "--key", kf)
	})
}

func TestHTTP3No0RTT(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t)
	tlsCfg := e.h3TLS()
	tlsCfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	// A first connection and a request, so that a session ticket comes.
	qc, err := quic.DialAddr(ctx, e.h3Addr(t), tlsCfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	cc := (&http3.Transport{}).NewClientConn(qc)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://app.example/", nil)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	qc.CloseWithError(0, "")
	// The second resumes, but may not send early (replayable) data.
	qc, err = quic.DialAddrEarly(ctx, e.h3Addr(t), tlsCfg, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	<-qc.HandshakeComplete()
	st := qc.ConnectionState()
	if st.Used0RTT {
		t.Error("the server accepted 0-RTT")
	}
	if !st.TLS.DidResume {
		t.Log("the second connection did not resume (no ticket); 0-RTT was impossible anyway")
	}
}

// TestHTTP3WithInternalCA: the internal CA's leaf for the SNI asked is
// served over QUIC too (quic-go gives GetCertificate a ClientHelloInfo
// whose Conn has the UDP addresses).
func TestHTTP3WithInternalCA(t *testing.T) {
	skipShort(t)
	t.Parallel()
	storage := t.TempDir()
	app := startApp(t)
	px := startOutrider(t, "proxy", "--upstream", "http://"+app.addr("addr"), "--storage", storage,
		"--listen", "127.0.0.1:0", "--http-listen", "", "--admin-listen", "127.0.0.1:0")
	roots, _ := rootFromCLI(t, storage)
	addr := px.addr("http3_addr")
	tr := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: roots},
		Dial: func(ctx context.Context, _ string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
			return quic.DialAddr(ctx, addr, tlsCfg, cfg)
		}}
	defer tr.Close()
	resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Get("https://app.internal/")
	if err != nil {
		t.Fatalf("HTTP/3 with the internal CA: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS.PeerCertificates[0].DNSNames[0] != "app.internal" {
		t.Errorf("GET = %d, certificate for %v", resp.StatusCode, resp.TLS.PeerCertificates[0].DNSNames)
	}
}

func TestHTTP3AppDownIs502(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t, "--upstream-wait", "0")
	h3, _ := e.h3Client(t)
	e.app.kill()
	code, body, _ := get(t, h3, "https://app.example/")
	if code != http.StatusBadGateway || body != "Bad Gateway\n" {
		t.Errorf("GET with the app down = %d %q, want 502 and the status text only", code, body)
	}
}
