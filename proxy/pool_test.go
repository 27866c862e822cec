package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// closingApp answers the first request on each connection with keep-alive
// and closes the connection on reading the second, without answering: a
// keep-alive connection the app gives up on just as a request arrives.
type closingApp struct {
	ln       net.Listener
	requests atomic.Int32 // requests read, answered or not
	conns    atomic.Int32
}

func newClosingApp(t *testing.T) *closingApp {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &closingApp{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.conns.Add(1)
			go a.serve(c)
		}
	}()
	return a
}

func (a *closingApp) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for i := 0; ; i++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		a.requests.Add(1)
		if i == 1 {
			return // the second request on a connection: hang up
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
	}
}

func testHandler(t *testing.T, upstream string) *handler {
	t.Helper()
	s, err := New(Config{
		Listen: "127.0.0.1:0", Upstream: "http://" + upstream,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	return s.handler
}

func serveOne(h http.Handler, method, target, body string, hdr ...string) *httptest.ResponseRecorder {
	var r *http.Request
	if body != "" {
		r = httptest.NewRequest(method, target, strings.NewReader(body))
	} else {
		r = httptest.NewRequest(method, target, nil)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// TestStaleKeepAliveRetried: a request that meets a connection the app
// closes without answering is sent once more on a fresh connection when it
// is safe to replay, and answered 502 when it is not.
func TestStaleKeepAliveRetried(t *testing.T) {
	app := newClosingApp(t)
	h := testHandler(t, app.ln.Addr().String())
	if w := serveOne(h, "GET", "/a", ""); w.Code != 200 {
		t.Fatalf("first request: %d", w.Code)
	}
	for _, tt := range []struct {
		name, method, body string
		hdr                []string
		want               int
	}{
		{"GET is retried", "GET", "", nil, 200},
		{"PUT with a small body is retried", "PUT", "data", nil, 200},
		{"POST with an Idempotency-Key is retried", "POST", "x=1", []string{"Idempotency-Key", "k1"}, 200},
		{"POST is not sent twice", "POST", "x=1", nil, http.StatusBadGateway},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := app.requests.Load()
			// Immediately, so that the pooled connection is reused without
			// a peek (the app's hang-up comes only on the next request).
			w := serveOne(h, tt.method, "/b", tt.body, tt.hdr...)
			if w.Code != tt.want {
				t.Errorf("%s on a connection the app drops: %d, want %d", tt.method, w.Code, tt.want)
			}
			sent := app.requests.Load() - before
			wantSent := int32(2)
			if tt.want != 200 {
				wantSent = 1
			}
			if sent != wantSent {
				t.Errorf("the app read the request %d times, want %d", sent, wantSent)
			}
			if tt.want != 200 {
				// The failed exchange left no pooled connection: prime one.
				serveOne(h, "GET", "/prime", "")
			}
		})
	}
}

// TestIdleConnectionPeekedBeforeReuse: a connection the app closed while
// it sat idle is noticed before a request is written to it.
func TestIdleConnectionPeekedBeforeReuse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				// Answer, then close at once: no Keep-Alive header says so.
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
			}()
		}
	}()
	h := testHandler(t, ln.Addr().String())
	for i := range 3 {
		if w := serveOne(h, "POST", "/", "x"); w.Code != 200 {
			t.Fatalf("request %d: %d (a POST is not retried, so the hang-up was missed)", i, w.Code)
		}
		time.Sleep(2 * peekAfter) // past peekAfter: the pool peeks
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("app connections = %d, want 3 (one per request)", n)
	}
}
