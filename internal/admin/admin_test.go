package admin

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestReadinessAndShutdown(t *testing.T) {
	var certErr atomic.Pointer[error]
	setCertErr := func(err error) { certErr.Store(&err) }
	setCertErr(errors.New("no certificate loaded"))
	var logs syncBuffer
	s := New(Config{
		Addr:              "127.0.0.1:0",
		Gatherer:          prometheus.NewRegistry(),
		Logger:            slog.New(slog.NewJSONHandler(&logs, nil)),
		ReadinessInterval: 10 * time.Millisecond,
		Checks: []Check{
			{Name: "certificate", Func: func(context.Context) error { return *certErr.Load() }},
			{Name: "upstream", Func: func(context.Context) error { return nil }},
		},
	})
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	base := "http://" + s.Addr()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "certificate: no certificate loaded") {
		t.Errorf("/readyz = %d %q, want 503 naming the failing check", code, body)
	}
	waitLog := func(want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(logs.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("no %s logged:\n%s", want, logs.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitLog(`"msg":"not ready","reason":"certificate: no certificate loaded"`)
	setCertErr(nil)
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz = %d with every check passing", code)
	}
	waitLog(`"msg":"ready"`)
	// A warning keeps it ready and is listed.
	setCertErr(Warning(errors.New("expires soon")))
	if code, body := get("/readyz"); code != 200 || body != "ok\nwarning: certificate: expires soon\n" {
		t.Errorf("/readyz with a warning = %d %q, want 200 listing it", code, body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code, _ := get("/metrics"); code != 200 {
		t.Errorf("/metrics = %d", code)
	}
	if code, _ := get("/debug/pprof/"); code != 404 {
		t.Errorf("pprof served without Pprof: %d", code)
	}
	s.SetStopping()
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "shutting down") {
		t.Errorf("/readyz while stopping = %d %q", code, body)
	}
	waitLog(`"msg":"not ready","reason":"shutting down"`)
	if n := strings.Count(logs.String(), `"msg":"ready"`); n != 1 {
		t.Errorf("%d ready lines, want 1 (changes only):\n%s", n, logs.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve = %v after cancel, want nil", err)
	}
}

func TestOffWhenAddrEmpty(t *testing.T) {
	s := New(Config{})
	if err := s.Listen(); err != nil || s.Addr() != "" {
		t.Fatalf("Listen with no Addr = %v, addr %q", err, s.Addr())
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Serve(ctx); err != nil {
		t.Errorf("Serve = %v", err)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
