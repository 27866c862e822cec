package certs

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"internal default", Config{Storage: "x"}, ""},
		{"acme", Config{Domains: []string{"a.example"}, ACMEDirectories: []string{"https://ca.example/dir"}}, ""},
		{"bad domain", Config{Domains: []string{"a b"}}, `--domain "a b"`},
		{"bad directory", Config{Domains: []string{"a.example"}, ACMEDirectories: []string{"ca.example"}}, "not an http(s) URL"},
		{"eab half", Config{Domains: []string{"a.example"}, ACMEEABKeyID: "kid"}, "go together"},
		{"cert and internal", Config{CertFile: "c", KeyFile: "k", Internal: true}, "choose one"},
		{"negative interval", Config{RenewCheckInterval: -time.Second}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestOpenStorage(t *testing.T) {
	for _, loc := range []string{"", "etcd://127.0.0.1:2379", "s3://bucket"} {
		if _, err := openStorage(loc, EtcdConfig{}); err == nil {
			t.Errorf("openStorage(%q) succeeded, want an error", loc)
		}
	}
	if _, err := openStorage("s3://bucket", EtcdConfig{}); !errors.Is(err, ErrStorageUnsupported) {
		t.Errorf("openStorage(s3) = %v, want ErrStorageUnsupported", err)
	}
	if _, err := openStorage("etcd://h:2379/p", EtcdConfig{}); err != nil {
		t.Errorf("openStorage(etcd) = %v, want the etcd storage (it connects on first use)", err)
	}
}

func TestZapBridge(t *testing.T) {
	var buf bytes.Buffer
	zl := newZapLogger(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	zl.Named("obtain").With(zap.String("identifier", "a.example")).Warn("could not get certificate", zap.Error(errors.New("boom")))
	zl.Info("acquiring lock")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2: %s", len(lines), buf.String())
	}
	var first, second map[string]any
	json.Unmarshal([]byte(lines[0]), &first)
	json.Unmarshal([]byte(lines[1]), &second)
	want := map[string]any{"level": "WARN", "msg": "could not get certificate", "logger": "certmagic",
		"logger_name": "obtain", "identifier": "a.example", "err": "boom"}
	for k, v := range want {
		if first[k] != v {
			t.Errorf("first line %s = %v, want %v (%s)", k, first[k], v, lines[0])
		}
	}
	if second["level"] != "DEBUG" {
		t.Errorf("certmagic Info logged at %v, want DEBUG", second["level"])
	}
}

func TestInternalCAIssuesAndRenews(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	clock := func() time.Time { return now }
	reg := prometheus.NewRegistry()
	m, err := New(Config{Storage: dir, Internal: true, Now: clock, InternalLifetime: time.Hour, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, err := InternalRootPEM(t.Context(), dir, EtcdConfig{})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	verify := func(c *tls.Certificate, name string) {
		t.Helper()
		inter := x509.NewCertPool()
		inter.AppendCertsFromPEM(pemCert(c.Certificate[1]))
		if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter, CurrentTime: now}); err != nil {
			t.Errorf("leaf for %s does not verify: %v", name, err)
		}
	}
	c1, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "app.internal"})
	if err != nil {
		t.Fatal(err)
	}
	verify(c1, "app.internal")
	if c, _ := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "app.internal"}); c != c1 {
		t.Error("second handshake issued a new leaf; want the cached one")
	}
	now = now.Add(45 * time.Minute) // past two thirds of the hour
	c2, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "app.internal"})
	if err != nil {
		t.Fatal(err)
	}
	if c2 == c1 {
		t.Error("leaf not renewed in its last third")
	}
	verify(c2, "app.internal")
	if _, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "bad name"}); !errors.Is(err, ErrNameNotAllowed) {
		t.Errorf("GetCertificate(bad name) = %v, want ErrNameNotAllowed", err)
	}
	for _, f := range []string{"root.key", "intermediate.key"} {
		fi, err := os.Stat(filepath.Join(dir, "outrider", "internal-ca", f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v, want 0600", f, err, fi.Mode().Perm())
		}
	}
	// The CA is created once: a second Manager on the same storage reuses it.
	if _, err := New(Config{Storage: dir, Internal: true}); err != nil {
		t.Fatal(err)
	}
	again, _ := InternalRootPEM(t.Context(), dir, EtcdConfig{})
	if !bytes.Equal(again, rootPEM) {
		t.Error("root changed on a second start")
	}
	if st := m.Status(); len(st) != 1 || st[0].Source != "internal" || st[0].LastResult != "success" {
		t.Errorf("Status() = %+v", st)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) != 0 {
		t.Errorf("GatherAndLint: %v %v", problems, err)
	}
}

func TestInternalCADomainsOnly(t *testing.T) {
	m, err := New(Config{Storage: t.TempDir(), Internal: true, Domains: []string{"App.Test"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Ready(t.Context()); err != nil {
		t.Errorf("Ready() = %v, want nil (issued at start)", err)
	}
	if _, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "app.test"}); err != nil {
		t.Error(err)
	}
	if _, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "other.test"}); !errors.Is(err, ErrNameNotAllowed) {
		t.Errorf("GetCertificate(other.test) = %v, want ErrNameNotAllowed", err)
	}
}

func TestInternalRootPEMMissing(t *testing.T) {
	if _, err := InternalRootPEM(t.Context(), t.TempDir(), EtcdConfig{}); !errors.Is(err, ErrNoInternalCA) {
		t.Errorf("InternalRootPEM(empty) = %v, want ErrNoInternalCA", err)
	}
}

// newTestACME builds an ACME source that never contacts a CA (Run is not
// called; the directory is a closed loopback port).
func newTestACME(t *testing.T, cfg Config) (*acmeSource, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Storage = t.TempDir()
	cfg.Domains = []string{"a.example"}
	cfg.ACMEDirectories = []string{"https://127.0.0.1:1/dir"}
	cfg.Registerer = reg
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.src.(*acmeSource).cache.Stop)
	return m.src.(*acmeSource), reg
}

func TestDuplicateGuard(t *testing.T) {
	tests := []struct {
		name     string
		limit    int
		force    bool
		recorded int
		wantErr  error
	}{
		{"under limit", 0, false, 4, nil},
		{"at default limit", 0, false, 5, ErrDuplicateLimit},
		{"custom limit", 2, false, 2, ErrDuplicateLimit},
		{"forced", 2, true, 3, nil},
		{"no limit", -1, false, 10, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, reg := newTestACME(t, Config{DuplicateLimit: tt.limit, ForceOrder: tt.force})
			ctx := t.Context()
			for range tt.recorded {
				if _, err := s.ledger.record(ctx, []string{"a.example"}); err != nil {
					t.Fatal(err)
				}
			}
			err := s.onEvent(ctx, "cert_obtaining", map[string]any{"identifier": "a.example"})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("cert_obtaining after %d orders = %v, want %v", tt.recorded, err, tt.wantErr)
			}
			if tt.wantErr != nil {
				if got := testutil.ToFloat64(s.m.renewals.WithLabelValues(resultRefused)); got != 1 {
					t.Errorf("renewals_total{refused} = %v, want 1", got)
				}
				if err := s.ready(); err == nil || !strings.Contains(err.Error(), "duplicate certificate limit") {
					t.Errorf("ready() = %v, want the refusal", err)
				}
			}
			if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) != 0 {
				t.Errorf("GatherAndLint: %v %v", problems, err)
			}
		})
	}
}

func TestLedgerForgetsOldOrders(t *testing.T) {
	s, _ := newTestACME(t, Config{})
	now := time.Now()
	s.ledger.now = func() time.Time { return now }
	for range 3 {
		s.ledger.record(t.Context(), []string{"a.example"})
	}
	now = now.Add(ledgerWindow + time.Minute)
	if got, _ := s.ledger.recent(t.Context(), []string{"A.example"}); len(got) != 0 {
		t.Errorf("recent after 7 days = %d, want 0", len(got))
	}
}

func TestACMEEventsDriveStatusAndMetrics(t *testing.T) {
	s, reg := newTestACME(t, Config{})
	ctx := t.Context()
	if err := s.ready(); err == nil {
		t.Error("ready() = nil before any certificate")
	}
	for range failingAfter {
		s.onEvent(ctx, "cert_obtaining", map[string]any{"identifier": "a.example"})
		s.onEvent(ctx, "cert_failed", map[string]any{"identifier": "a.example", "error": errors.New("connection refused")})
	}
	st := s.status()
	if len(st) != 1 || st[0].ConsecutiveFailures != failingAfter || st[0].LastResult != "error" || st[0].Warning == "" {
		t.Errorf("status() = %+v, want %d failures with a warning", st, failingAfter)
	}
	if got := testutil.ToFloat64(s.m.degraded.WithLabelValues("a.example")); got != 1 {
		t.Errorf("degraded = %v, want 1", got)
	}
	if err := s.ready(); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("ready() = %v, want the last error", err)
	}
	if nextProtos := s.nextProtos(); len(nextProtos) != 1 || nextProtos[0] != "acme-tls/1" {
		t.Errorf("nextProtos() = %v", nextProtos)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) != 0 {
		t.Errorf("GatherAndLint: %v %v", problems, err)
	}
}

func TestTestCANeverPublicForPrivateDirectory(t *testing.T) {
	s, _ := newTestACME(t, Config{})
	for _, iss := range s.issuers {
		if iss.TestCA != iss.CA {
			t.Errorf("issuer %s has TestCA %s; want the same private directory", iss.CA, iss.TestCA)
		}
	}
	if got := testCA(LetsEncryptProduction); got != LetsEncryptStaging {
		t.Errorf("testCA(LE production) = %s", got)
	}
}
