package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/quic-go/quic-go"
)

func TestConnectProtocol(t *testing.T) {
	tests := []struct {
		name  string
		major int
		proto string
		hdr   http.Header
		want  string
	}{
		{"h2 extended", 2, "HTTP/2.0", http.Header{":protocol": {"websocket"}}, "websocket"},
		{"h2 plain CONNECT", 2, "HTTP/2.0", http.Header{}, ""},
		{"h3 extended", 3, "websocket", http.Header{}, "websocket"},
		{"h3 plain CONNECT", 3, "HTTP/3.0", http.Header{}, ""},
		{"h1 header is not a pseudo-header", 1, "HTTP/1.1", http.Header{":protocol": {"websocket"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &http.Request{Method: http.MethodConnect, ProtoMajor: tt.major, Proto: tt.proto, Header: tt.hdr}
			if got := connectProtocol(r); got != tt.want {
				t.Errorf("connectProtocol = %q, want %q", got, tt.want)
			}
		})
	}
}

// stubBody is a request body that yields its data, then err.
type stubBody struct {
	data string
	err  error
}

func (b *stubBody) Read(p []byte) (int, error) {
	if b.data == "" {
		return 0, b.err
	}
	n := copy(p, b.data)
	b.data = b.data[n:]
	return n, nil
}

func (b *stubBody) Close() error { return nil }

func TestPeekBody(t *testing.T) {
	boom := errors.New("stream reset")
	tests := []struct {
		name    string
		body    *stubBody
		noBody  bool
		want    string
		wantErr error
	}{
		{"ended with the headers", &stubBody{err: io.EOF}, true, "", io.EOF},
		{"a body", &stubBody{data: "hello", err: io.EOF}, false, "hello", nil},
		{"one byte", &stubBody{data: "x", err: io.EOF}, false, "x", nil},
		{"failed at once", &stubBody{err: boom}, false, "", boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Body, r.ContentLength = tt.body, -1
			peekBody(httptest.NewRecorder(), r, time.Second)
			if (r.Body == http.NoBody) != tt.noBody {
				t.Fatalf("body %T, want NoBody %v", r.Body, tt.noBody)
			}
			if tt.noBody {
				if r.ContentLength != 0 {
					t.Errorf("ContentLength %d, want 0", r.ContentLength)
				}
				return
			}
			got, err := io.ReadAll(r.Body)
			if string(got) != tt.want || (tt.wantErr == nil) != (err == nil) || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("read %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestQUICGuard(t *testing.T) {
	addr := func(ip string, port int) net.Addr { return &net.UDPAddr{IP: net.ParseIP(ip), Port: port} }
	g := &quicGuard{conns: map[netip.Addr]int{}, metrics: newMetrics(nil)}

	t.Run("a burst past the rate gets Retry", func(t *testing.T) {
		g.window.Store(time.Now().Unix())
		g.count.Store(0)
		retries := 0
		for i := range quicRetryAbove + 10 {
			if g.verifySource(addr("192.0.2.1", 1000+i)) {
				retries++
			}
		}
		// The window may turn a second meanwhile: at least the excess.
		if retries < 1 || retries > 10 {
			t.Errorf("%d of %d attempts got Retry, want 10", retries, quicRetryAbove+10)
		}
	})

	t.Run("an address at half its cap gets Retry, at the cap is refused", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			g := &quicGuard{conns: map[netip.Addr]int{}, metrics: newMetrics(nil)}
			ctx, cancel := context.WithCancel(t.Context())
			info := &quic.ClientInfo{RemoteAddr: addr("198.51.100.7", 4433)}
			for i := range quicConnsPerIP {
				if _, err := g.connContext(ctx, info); err != nil {
					t.Fatalf("connection %d refused: %v", i+1, err)
				}
			}
			if !g.verifySource(info.RemoteAddr) {
				t.Error("no Retry for an address holding its whole cap")
			}
			if g.verifySource(addr("198.51.100.8", 4433)) {
				t.Error("Retry for another address")
			}
			if _, err := g.connContext(ctx, info); !errors.Is(err, errTooManyQUICConns) {
				t.Errorf("connection past the cap: %v, want %v", err, errTooManyQUICConns)
			}
			cancel() // every connection closes
			synctest.Wait()
			if n := len(g.conns); n != 0 {
				t.Errorf("%d addresses still counted after every connection closed", n)
			}
		})
	})
}

func TestInflightDrain(t *testing.T) {
	var f h3Inflight
	select {
	case <-f.drain():
	default:
		t.Fatal("drain of nothing in flight is not done at once")
	}
	f.add()
	f.add()
	ch := f.drain()
	f.done()
	select {
	case <-ch:
		t.Fatal("drained with a request in flight")
	default:
	}
	if !f.busy() {
		t.Error("not busy with a request in flight")
	}
	f.done()
	select {
	case <-ch:
	case <-time.After(time.Second):
		t.Fatal("not drained after the last request")
	}
}

func TestAltSvcOnlyOverTCP(t *testing.T) {
	mount := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	cfg := Config{Upstream: "http://127.0.0.1:1", Mounts: map[string]http.Handler{"/m": mount}}.withDefaults()
	up, _ := ParseUpstream(cfg.Upstream, false)
	h := newHandler(cfg, up, newMetrics(nil), nil)
	h.altSvc = newAltSvc("8443")
	for _, major := range []int{1, 2, 3} {
		r := httptest.NewRequest(http.MethodGet, "https://localhost/m", nil)
		r.ProtoMajor = major
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		got := w.Header().Get("Alt-Svc")
		if want := major < 3; (got != "") != want || want && got != `h3=":443"; ma=86400` {
			t.Errorf("HTTP/%d: Alt-Svc %q", major, got)
		}
	}
}

func TestAltSvcForHost(t *testing.T) {
	a := newAltSvc("8443")
	tests := []struct{ host, want string }{
		{"app.example", `h3=":443"; ma=86400`},
		{"app.example:443", `h3=":443"; ma=86400`},
		{"app.example:8443", `h3=":8443"; ma=86400`},
		{"app.example:9443", `h3=":9443"; ma=86400`}, // a port mapped in front of us
		{"[2001:db8::1]", `h3=":443"; ma=86400`},
		{"[2001:db8::1]:8443", `h3=":8443"; ma=86400`},
		{"app.example:", ""},
		{"app.example:0", ""},
		{"app.example:65536", ""},
		{"app.example:08443", ""},
		{"app.example:+443", ""},
		{`app.example:1"; x`, ""},
	}
	for _, tt := range tests {
		got := strings.Join(a.forHost(tt.host), ",")
		if got != tt.want {
			t.Errorf("forHost(%q) = %q, want %q", tt.host, got, tt.want)
		}
	}
	if testing.AllocsPerRun(100, func() { a.forHost("app.example"); a.forHost("app.example:8443") }) != 0 {
		t.Error("the usual Alt-Svc values allocate")
	}
}
