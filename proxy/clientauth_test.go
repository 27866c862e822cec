package proxy

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outrider-dev/outrider/internal/testcert"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestClientRules(t *testing.T) {
	leaf := &x509.Certificate{
		Subject:  pkix.Name{CommonName: "web", OrganizationalUnit: []string{"eng", "ops"}},
		DNSNames: []string{"web.internal"},
		URIs:     []*url.URL{{Scheme: "spiffe", Host: "example.org", Path: "/ns/prod/sa/web"}},
	}
	tests := []struct {
		rule    string
		want    bool
		wantErr string
	}{
		{rule: "cn=web", want: true},
		{rule: "cn=Web", want: false},
		{rule: "dns=WEB.internal", want: true},
		{rule: "ou=ops", want: true},
		{rule: "ou=sales", want: false},
		{rule: "uri=spiffe://example.org/ns/prod/sa/web", want: true},
		{rule: "uri=spiffe://example.org/ns/prod/sa/we", want: false},
		{rule: "uri=spiffe://example.org/ns/prod/*", want: true},
		{rule: "uri=spiffe://example.org/ns/dev/*", want: false},
		{rule: "CN=web", want: true},
		{rule: "cn=", wantErr: "want cn=NAME"},
		{rule: "web", wantErr: "want cn=NAME"},
		{rule: "email=a@b", wantErr: "want cn=, dns=, uri= or ou="},
		{rule: "uri=example.org/x", wantErr: "must be absolute"},
	}
	for _, tt := range tests {
		t.Run(tt.rule, func(t *testing.T) {
			r, err := parseClientRule(tt.rule)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseClientRule(%q) error = %v, want it to contain %q", tt.rule, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := r.matches(leaf); got != tt.want {
				t.Errorf("rule %q matches = %v, want %v", tt.rule, got, tt.want)
			}
		})
	}
}

func TestHeaderSafe(t *testing.T) {
	for in, want := range map[string]string{
		"CN=alice,OU=eng":         "CN=alice,OU=eng",
		"CN=evil\r\nX-Admin: yes": "CN=evil%0D%0AX-Admin: yes",
		"CN=100%":                 "CN=100%25",
	} {
		if got := headerSafe(in); got != want {
			t.Errorf("headerSafe(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestShieldMetricsLint(t *testing.T) {
	ca := testcert.NewCA(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg := Config{ClientCAFile: caFile, MaxInflight: 1, RateLimit: Rate{PerSecond: 1, Count: 1}, AuthURL: "http://127.0.0.1:1/",
		BufferRequests: 1 << 20, Compress: []string{"gzip", "zstd"}, Registerer: reg}.withDefaults()
	trust, err := newClientTrust(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := newMetrics(reg)
	newShield(&handler{cfg: cfg, log: cfg.Logger}, cfg, m, trust)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
}
