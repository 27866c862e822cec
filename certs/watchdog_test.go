package certs

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"
)

func leafAt(notBefore time.Time, life time.Duration) *x509.Certificate {
	return &x509.Certificate{NotBefore: notBefore, NotAfter: notBefore.Add(life)}
}

func TestServedProblem(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	served := leafAt(t0, 100*time.Hour)
	newer := leafAt(t0.Add(60*time.Hour), 100*time.Hour)
	tests := []struct {
		name     string
		now      time.Time
		leaf     *x509.Certificate
		stored   *x509.Certificate
		staleRun int
		want     string
	}{
		{"nothing served", t0, nil, nil, 0, ""},
		{"fresh", t0.Add(time.Hour), served, served, 0, ""},
		{"renewal window is not a problem", t0.Add(80 * time.Hour), served, served, 0, ""},
		{"last tenth", t0.Add(91 * time.Hour), served, served, 0, "last tenth of its lifetime"},
		{"expired", t0.Add(101 * time.Hour), served, newer, 5, "expired certificate"},
		{"storage newer, first look", t0.Add(61 * time.Hour), served, newer, 1, ""},
		{"storage newer, again", t0.Add(61 * time.Hour), served, newer, 2, "older than the one in storage"},
		{"storage older", t0.Add(61 * time.Hour), newer, served, 3, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := servedProblem(tt.now, tt.leaf, tt.stored, tt.staleRun)
			if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
				t.Errorf("servedProblem() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCheckInterval(t *testing.T) {
	tests := []struct {
		renewCheck, life, want time.Duration
	}{
		{10 * time.Minute, 0, time.Minute},
		{10 * time.Minute, 90 * 24 * time.Hour, time.Minute},
		{10 * time.Minute, 6 * 24 * time.Hour, time.Minute},
		{10 * time.Minute, 30 * time.Second, 1500 * time.Millisecond},
		{10 * time.Minute, 5 * time.Second, time.Second},
		{10 * time.Second, time.Hour, 10 * time.Second},
	}
	for _, tt := range tests {
		if got := checkInterval(tt.renewCheck, tt.life); got != tt.want {
			t.Errorf("checkInterval(%v, %v) = %v, want %v", tt.renewCheck, tt.life, got, tt.want)
		}
	}
}

func TestStaleARI(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	leaf := leafAt(t0, 90*time.Hour) // renewal due at 60h
	window := func(start time.Time) *acme.RenewalInfo {
		var ri acme.RenewalInfo
		ri.SuggestedWindow.Start, ri.SuggestedWindow.End = start, start.Add(time.Hour)
		return &ri
	}
	tests := []struct {
		name    string
		now     time.Time
		ari     *acme.RenewalInfo
		wantErr error
	}{
		{"window within the lifetime", t0.Add(50 * time.Hour), window(t0.Add(50 * time.Hour)), nil},
		{"no window", t0.Add(time.Minute), &acme.RenewalInfo{}, nil},
		{"window before issuance", t0.Add(time.Minute), window(t0.Add(-time.Hour)), errStaleARI},
		{"stale window but due by lifetime", t0.Add(61 * time.Hour), window(t0.Add(-time.Hour)), nil},
	}
	for _, tt := range tests {
		if err := staleARI(tt.now, leaf, tt.ari); !errors.Is(err, tt.wantErr) {
			t.Errorf("%s: staleARI() = %v, want %v", tt.name, err, tt.wantErr)
		}
	}
}
