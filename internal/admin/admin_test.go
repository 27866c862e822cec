package admin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestReadinessAndShutdown(t *testing.T) {
	var certErr error = errors.New("no certificate loaded")
	s := New(Config{
		Addr:     "127.0.0.1:0",
		Gatherer: prometheus.NewRegistry(),
		Checks: []Check{
			{Name: "certificate", Func: func(context.Context) error { return certErr }},
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
	certErr = nil
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz = %d with every check passing", code)
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
