package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outrider-dev/outrider/internal/testcert"
	"github.com/prometheus/client_golang/prometheus"
)

// Benchmarks of the request path. Loopback only; every one runs with access
// logging (JSON, as outrider logs when stderr is not a terminal) and metrics
// on, as in production. Run with:
//
//	go test -run '^$' -bench . -benchmem ./proxy/

// benchUpstream is a stand-in app answering 1 KiB, like shared/bench/backend.
func benchUpstream(b *testing.B) *httptest.Server {
	b.Helper()
	small := []byte(strings.Repeat("x", 1024))
	big := []byte(strings.Repeat("y", 1<<20))
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := small
		if r.URL.Path == "/big" {
			body = big
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	}))
	b.Cleanup(app.Close)
	return app
}

func benchServer(b *testing.B, upstream string) *Server {
	b.Helper()
	cert := testcert.NewCA(b).TLSCert(b, "localhost", "127.0.0.1")
	s, err := New(Config{
		Listen:         "127.0.0.1:0",
		Upstream:       upstream,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil },
		Rewrites:       AllRewrites,
		AccessLog:      &AccessLog{W: io.Discard, JSON: true},
		Logger:         slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Registerer:     prometheus.NewRegistry(),
	})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkHandler is the whole handler (names, rewrite, forwarding headers,
// upstream round trip over a pooled loopback connection, response copy,
// metrics, access log) without the client-side TLS and HTTP parsing.
func BenchmarkHandler(b *testing.B) {
	app := benchUpstream(b)
	s := benchServer(b, app.URL)
	s.handler.watch.Store(newStallWatch(s.cfg.IdleTimeout)) // as Serve does
	h := s.Handler()
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest("GET", "https://localhost/", nil)
		r.RemoteAddr = "127.0.0.1:40000"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 || w.Body.Len() != 1024 {
			b.Fatalf("got %d, %d bytes", w.Code, w.Body.Len())
		}
	}
}

// BenchmarkServeTLS drives a real listener (Server.Listen + Serve, the same
// TLS and http.Server settings as outrider) over keep-alive connections.
// Its allocations include the Go client's.
func BenchmarkServeTLS(b *testing.B) {
	app := benchUpstream(b)
	for _, tc := range []struct {
		name, path string
		h2         bool
	}{{"h1", "/", false}, {"h2", "/", true}, {"h1-1MiB", "/big", false}} {
		b.Run(tc.name, func(b *testing.B) {
			s := benchServer(b, app.URL)
			if err := s.Listen(); err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Serve(ctx) }()
			b.Cleanup(func() { cancel(); <-done })
			tr := &http.Transport{
				TLSClientConfig:     &tls.Config{InsecureSkipVerify: true},
				MaxIdleConnsPerHost: 64,
				ForceAttemptHTTP2:   tc.h2,
			}
			if !tc.h2 {
				tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			}
			b.Cleanup(tr.CloseIdleConnections)
			client := &http.Client{Transport: tr}
			url := "https://" + s.Addr() + tc.path
			b.ReportAllocs()
			b.SetParallelism(4)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Get(url)
					if err != nil {
						b.Error(err)
						return
					}
					n, _ := io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || (tc.path == "/" && n != 1024) {
						b.Errorf("got %d, %d bytes", resp.StatusCode, n)
						return
					}
				}
			})
		})
	}
}

func BenchmarkWriteForwarded(b *testing.B) {
	in := http.Header{"X-Forwarded-For": {"203.0.113.9"}, "Forwarded": {"for=203.0.113.9"}}
	w := bufio.NewWriterSize(io.Discard, 4096)
	for _, trusted := range []bool{false, true} {
		b.Run(map[bool]string{false: "untrusted", true: "trusted"}[trusted], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				writeForwarded(w, in, "192.0.2.7", false, "app.example", trusted)
			}
		})
	}
}

func BenchmarkRewriteResponse(b *testing.B) {
	b.Run("plain", func(b *testing.B) { // the common case: nothing to rewrite
		h := http.Header{"Content-Type": {"text/html"}, "Content-Length": {"1024"}}
		b.ReportAllocs()
		for b.Loop() {
			rewriteResponse(h, AllRewrites, "app.example", "127.0.0.1:8080")
		}
	})
	b.Run("redirect+cookies", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h := http.Header{
				"Location":   {"http://app.example/login?next=%2F"},
				"Set-Cookie": {"sid=abc; Path=/; HttpOnly", "pref=1; Secure"},
			}
			rewriteResponse(h, AllRewrites, "app.example", "127.0.0.1:8080")
		}
	})
	b.Run("destination", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rewriteDestination("https://app.example/dav/b.txt", "app.example")
		}
	})
}

// BenchmarkFinish is the per-request bookkeeping: the metrics and one JSON
// access-log line.
func BenchmarkFinish(b *testing.B) {
	s := benchServer(b, "http://127.0.0.1:1")
	h := s.handler
	r := httptest.NewRequest("GET", "https://app.example/some/path", nil)
	r.RemoteAddr = "192.0.2.7:40000"
	accessLog := h.cfg.AccessLog
	for _, on := range []bool{true, false} {
		b.Run("access_log="+strconv.FormatBool(on), func(b *testing.B) {
			h.cfg.AccessLog = nil
			if on {
				h.cfg.AccessLog = accessLog
			}
			rw := &respWriter{status: 200, bytes: 1024}
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				rw.headerAt = start
				h.finish(rw, r, start)
			}
		})
	}
}

// deadlineWriter is a ResponseWriter whose deadlines are those of a real
// loopback socket, so that arming them costs what it costs on a client
// connection; the bytes themselves go nowhere.
type deadlineWriter struct {
	hdr  http.Header
	conn net.Conn
}

func (w *deadlineWriter) Header() http.Header                { return w.hdr }
func (w *deadlineWriter) WriteHeader(int)                    {}
func (w *deadlineWriter) Write(p []byte) (int, error)        { return len(p), nil }
func (w *deadlineWriter) SetWriteDeadline(t time.Time) error { return w.conn.SetWriteDeadline(t) }

// BenchmarkRespWriterWrite is the cost of one 32 KiB write of a response
// body through respWriter, deadline handling included.
func BenchmarkRespWriterWrite(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			io.Copy(io.Discard, c)
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	dw := &deadlineWriter{hdr: http.Header{}, conn: c}
	buf := make([]byte, 32<<10)
	b.Run("deadline-per-write", func(b *testing.B) { // the handler without Serve
		w := newRespWriter(dw, time.Minute)
		b.ReportAllocs()
		b.SetBytes(int64(len(buf)))
		for b.Loop() {
			w.Write(buf)
		}
		w.release()
	})
	b.Run("stall-watch", func(b *testing.B) { // as under Serve
		watch := newStallWatch(time.Minute)
		w := newRespWriter(dw, time.Minute)
		watch.add(w)
		b.ReportAllocs()
		b.SetBytes(int64(len(buf)))
		for b.Loop() {
			w.Write(buf)
		}
		w.release()
	})
}
