//lint:file-ignore SA1019 net/http's Transport refuses a ":protocol" header (Go 1.26), so extended CONNECT over HTTP/2 is sent with x/net's deprecated http2.Transport.

package integration

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// WebSockets over HTTP/2 (RFC 8441) and HTTP/3 (RFC 9220): extended
// CONNECT with :protocol websocket, tunnelled by outrider to the testapp's
// real RFC 6455 endpoint (/ws, an echo) as an HTTP/1.1 upgrade.

// wsMessage sends one masked text frame and reads one frame back, over a
// WebSocket stream of an extended CONNECT (no HTTP/1.1 handshake: the
// stream is already the WebSocket).
func wsMessage(t *testing.T, rw io.ReadWriter, msg string) string {
	t.Helper()
	if err := writeWSFrame(rw, 0x1, []byte(msg)); err != nil {
		t.Fatalf("writing a WebSocket frame: %v", err)
	}
	op, payload, err := readWSFrame(rw)
	if err != nil || op != 0x1 {
		t.Fatalf("reading a WebSocket frame: opcode %d %q, %v", op, payload, err)
	}
	return string(payload)
}

// writeWSFrame writes one final, masked client frame (RFC 6455 §5.2).
func writeWSFrame(w io.Writer, opcode byte, payload []byte) error {
	hdr := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n < 1<<16:
		hdr = append(hdr, 0x80|126, byte(n>>8), byte(n))
	default:
		hdr = append(hdr, 0x80|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	var mask [4]byte
	rand.Read(mask[:])
	hdr = append(hdr, mask[:]...)
	masked := make([]byte, len(payload))
	for i, b := range payload {
		masked[i] = b ^ mask[i%4]
	}
	_, err := w.Write(append(hdr, masked...))
	return err
}

// readWSFrame reads one unmasked server frame.
func readWSFrame(r io.Reader) (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if h[1]&0x80 != 0 || n > 1<<20 {
		return 0, nil, errors.New("masked or oversized server frame")
	}
	p := make([]byte, n)
	_, err := io.ReadFull(r, p)
	return h[0] & 0x0f, p, err
}

func TestWebSocketOverHTTP3(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t)
	cc := e.dialH3(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	select {
	case <-cc.ReceivedSettings():
	case <-ctx.Done():
		t.Fatal("no SETTINGS from the server")
	}
	if !cc.Settings().EnableExtendedConnect {
		t.Fatal("server does not offer extended CONNECT (RFC 9220)")
	}
	str, err := cc.OpenRequestStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodConnect, "https://app.example/ws", nil)
	req.Proto = "websocket"
	req.Header.Set("Sec-WebSocket-Version", "13")
	if err := str.SendRequestHeader(req); err != nil {
		t.Fatal(err)
	}
	resp, err := str.ReadResponse()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("extended CONNECT :protocol websocket = %d, want 200", resp.StatusCode)
	}
	for _, msg := range []string{"hello over h3", strings.Repeat("x", 70000)} {
		if got := wsMessage(t, str, msg); got != "echo: "+msg {
			t.Errorf("echo = %.40q…, want %.40q…", got, "echo: "+msg)
		}
	}
	writeWSFrame(str, 0x8, []byte{0x03, 0xe8}) // close, 1000
	if op, _, err := readWSFrame(str); err != nil || op != 0x8 {
		t.Errorf("close handshake: opcode %d, %v", op, err)
	}
	str.Close()
	if _, err := io.ReadAll(str); err != nil {
		t.Errorf("stream after close: %v", err)
	}
	line := e.px.waitLog(10*time.Second, `"method":"CONNECT"`)
	if !strings.Contains(line, `"status":200`) || !strings.Contains(line, `"proto":"HTTP/3.0"`) {
		t.Errorf("access log: %s", line)
	}
}

func TestWebSocketOverHTTP2(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequestWithContext(ctx, http.MethodConnect, "https://app.example/ws", pr)
	req.Header.Set(":protocol", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	// x/net's HTTP/2 transport: net/http's own refuses a ":protocol" header
	// before it reaches HTTP/2.
	h2 := &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: e.ca.Pool()},
		DialTLSContext: func(ctx context.Context, _, _ string, cfg *tls.Config) (net.Conn, error) {
			return (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", e.https)
		}}
	defer h2.CloseIdleConnections()
	resp, err := h2.RoundTrip(req)
	if err != nil {
		t.Fatalf("extended CONNECT over HTTP/2 (RFC 8441): %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("extended CONNECT = %d %s, want 200 over HTTP/2", resp.StatusCode, resp.Proto)
	}
	rw := struct {
		io.Reader
		io.Writer
	}{resp.Body, pw}
	for _, msg := range []string{"hello over h2", strings.Repeat("y", 70000)} {
		if got := wsMessage(t, rw, msg); got != "echo: "+msg {
			t.Errorf("echo = %.40q…, want %.40q…", got, "echo: "+msg)
		}
	}
	writeWSFrame(pw, 0x8, []byte{0x03, 0xe8})
	if op, _, err := readWSFrame(resp.Body); err != nil || op != 0x8 {
		t.Errorf("close handshake: opcode %d, %v", op, err)
	}
	pw.Close()
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Errorf("stream after close: %v", err)
	}

	t.Run("an app that does not switch is a 502", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodConnect, "https://app.example/echo", http.NoBody)
		req.Header.Set(":protocol", "websocket")
		if code := statusOf(t, h2, req); code != http.StatusBadGateway {
			t.Errorf("extended CONNECT to a plain page = %d, want 502 (a 200 would fake an open WebSocket)", code)
		}
	})

	t.Run("plain CONNECT is still refused", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodConnect, "https://app.example", http.NoBody)
		if code := statusOf(t, h2, req); code != http.StatusMethodNotAllowed {
			t.Errorf("CONNECT = %d, want 405", code)
		}
	})
}

// statusOf sends req with rt and returns the response's status code.
func statusOf(t *testing.T, rt http.RoundTripper, req *http.Request) int {
	t.Helper()
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
