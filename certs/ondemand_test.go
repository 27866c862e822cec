package certs

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestOnDemandDecide(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	ask := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := r.URL.Query().Get("domain")
		mu.Lock()
		asked = append(asked, d)
		mu.Unlock()
		switch d {
		case "a.example", "b.example", "c.example":
			w.WriteHeader(http.StatusNoContent)
		case "moved.example":
			http.Redirect(w, r, "/yes", http.StatusFound)
		default:
			http.Error(w, "no", http.StatusForbidden)
		}
	}))
	defer ask.Close()
	od, err := newOnDemand(Config{OnDemandAsk: ask.URL + "/check?token=x", OnDemandMaxNames: 2, OnDemandRate: 1,
		Now: time.Now, Logger: slog.New(slog.DiscardHandler)}, newMetrics(nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tests := []struct {
		name    string
		wantErr error
	}{
		{"a.example", nil},
		{"evil.example", ErrOnDemandRefused},
		{"moved.example", ErrOnDemandRefused}, // a redirect is not a yes
		{"b.example", nil},
		{"a.example", nil},            // known names stay allowed at the cap
		{"c.example", ErrOnDemandCap}, // allowed by ask, but a third name
	}
	for _, tt := range tests {
		if err := od.decide(ctx, tt.name); !errors.Is(err, tt.wantErr) {
			t.Errorf("decide(%q) = %v, want %v", tt.name, err, tt.wantErr)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"a.example", "evil.example", "moved.example", "b.example", "a.example"} // c.example never asked
	if len(asked) != len(want) {
		t.Fatalf("asked %q, want %q", asked, want)
	}
	for i := range want {
		if asked[i] != want[i] {
			t.Fatalf("asked %q, want %q", asked, want)
		}
	}
}

func TestOnDemandAskDown(t *testing.T) {
	ask := httptest.NewServer(http.NotFoundHandler())
	url := ask.URL
	ask.Close()
	od, _ := newOnDemand(Config{OnDemandAsk: url + "/?token=s3cr3t", OnDemandMaxNames: 5, OnDemandRate: 5,
		Now: time.Now, Logger: slog.New(slog.DiscardHandler)}, newMetrics(nil))
	err := od.decide(context.Background(), "a.example")
	if !errors.Is(err, ErrOnDemandRefused) {
		t.Errorf("decide with the ask service down = %v, want ErrOnDemandRefused", err)
	}
	if strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("error %q shows the ask URL's query", err)
	}
}

func TestOnDemandOrderRate(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	od, _ := newOnDemand(Config{OnDemandAsk: "http://127.0.0.1:1/", OnDemandMaxNames: 10, OnDemandRate: 2,
		Now: func() time.Time { return now }, Logger: slog.New(slog.DiscardHandler)}, newMetrics(nil))
	for i, want := range []error{nil, nil, ErrOnDemandRate} {
		if err := od.allowOrder("n.example"); !errors.Is(err, want) {
			t.Errorf("order %d = %v, want %v", i+1, err, want)
		}
		now = now.Add(10 * time.Second)
	}
	now = now.Add(40 * time.Second) // the first order is now a minute old
	if err := od.allowOrder("n.example"); err != nil {
		t.Errorf("order after the minute = %v, want nil", err)
	}
}
