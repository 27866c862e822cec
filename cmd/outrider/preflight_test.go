package main

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"
)

// Issue #12: preflight passed names and addresses a public CA refuses.
func TestNameProblem(t *testing.T) {
	tests := []struct {
		name       string
		wantWhy    string // substring; "" for no problem
		wantAlways bool
	}{
		{"app.example.de", "", false},
		{"www.outrider.dev", "", false},
		{"localhost", "localhost", false},
		{"app.localhost.", "localhost", false},
		{"app.test", "RFC 2606", false},
		{"x.example", "RFC 2606", false},
		{"bad.invalid", "RFC 2606", false},
		{"app.example.com", "documentation", false},
		{"example.org", "documentation", false},
		{"printer.local", "multicast DNS", false},
		{"db.corp.internal", "private networks", false},
		{"nas.home.arpa", "home networks", false},
		{"intranet", "single-label", false},
		{"192.0.2.7", "IP address", true},
		{"2001:db8::1", "IP address", true},
	}
	for _, tt := range tests {
		why, always := nameProblem(tt.name)
		if tt.wantWhy == "" && why != "" || tt.wantWhy != "" && !strings.Contains(why, tt.wantWhy) || always != tt.wantAlways {
			t.Errorf("nameProblem(%q) = %q, %v; want one containing %q, %v", tt.name, why, always, tt.wantWhy, tt.wantAlways)
		}
	}
}

func TestPrivateAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"10.1.2.3": true, "172.20.0.1": true, "192.168.1.1": true, "127.0.0.1": true, "169.254.1.1": true,
		"100.64.0.1": true, "198.18.0.2": true, "fd00::1": true, "::1": true, "fe80::1": true, "::ffff:10.0.0.1": true,
		"8.8.8.8": false, "2606:4700::1111": false, "172.32.0.1": false,
	} {
		if got := privateAddr(netip.MustParseAddr(addr)); got != want {
			t.Errorf("privateAddr(%s) = %v, want %v", addr, got, want)
		}
	}
	for dir, want := range map[string]bool{
		"https://acme-v02.api.letsencrypt.org/directory":         true,
		"https://acme-staging-v02.api.letsencrypt.org/directory": true,
		"https://acme.zerossl.com/v2/DV90":                       true,
		"https://ca.internal.example/acme/acme/directory":        false,
		"https://127.0.0.1:14000/dir":                            false,
	} {
		if got := isPublicCA(dir); got != want {
			t.Errorf("isPublicCA(%s) = %v, want %v", dir, got, want)
		}
	}
}

// A reserved name fails against the default (public) directory before any
// lookup or listener: no network is touched.
func TestPreflightRefusesReservedNameForPublicCA(t *testing.T) {
	var out bytes.Buffer
	code := run(context.Background(), []string{"preflight", "--domain", "app.test", "--http-listen", "", "--listen", ""}, &out, &out)
	if code != 1 || !strings.Contains(out.String(), "FAIL  app.test: .test is reserved (RFC 2606)") {
		t.Errorf("preflight --domain app.test = %d\n%s\nwant exit 1 with the reason", code, out.String())
	}
}
