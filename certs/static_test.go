package certs

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outrider-dev/outrider/internal/testcert"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Issue #12: a --cert file about to expire showed no degraded series, no
// warning, and a /status unlike ACME's. Static files now report through the
// tracker every source uses.
func TestStaticCertReportsLikeOtherSources(t *testing.T) {
	ca := testcert.NewCA(t)
	dir := t.TempDir()
	certPEM, keyPEM := ca.Leaf(t, time.Now().Add(90*24*time.Hour), "a.example", "b.example")
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	os.WriteFile(certFile, certPEM, 0o600)
	os.WriteFile(keyFile, keyPEM, 0o600)

	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	setClock := func(t time.Time) { mu.Lock(); defer mu.Unlock(); now = t }
	var logs bytes.Buffer
	var logMu sync.Mutex
	reg := prometheus.NewRegistry()
	m, err := New(Config{CertFile: certFile, KeyFile: keyFile, Registerer: reg, Now: clock,
		Logger: slog.New(slog.NewJSONHandler(&syncWriter{w: &logs, mu: &logMu}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	src := m.src.(*staticSource)
	if got := testutil.ToFloat64(src.metrics.info.WithLabelValues("a.example", "file", "outrider test CA")); got != 1 {
		t.Errorf("outrider_certs_info{domain=a.example,source=file,issuer=outrider test CA} = %v, want 1", got)
	}
	for _, n := range []string{"a.example", "b.example"} {
		if got := testutil.ToFloat64(src.metrics.degraded.WithLabelValues(n)); got != 0 {
			t.Errorf("degraded{%s} = %v with 90 days left, want 0", n, got)
		}
	}
	st := m.Status()
	if len(st) != 2 || st[0].Source != "file" || st[0].Issuer != "outrider test CA" || st[0].RenewalDue.IsZero() || st[0].Warning != "" {
		t.Errorf("Status() = %+v, want two file entries with issuer and renewal due, no warning", st)
	}

	// A day before expiry: degraded, a warning logged, still ready.
	setClock(time.Now().Add(89 * 24 * time.Hour))
	src.reloadQuiet(t.Context()) // the periodic re-check
	if got := testutil.ToFloat64(src.metrics.degraded.WithLabelValues("a.example")); got != 1 {
		t.Errorf("degraded = %v a day before expiry, want 1", got)
	}
	if st := m.Status(); !strings.Contains(st[0].Warning, "expires soon") {
		t.Errorf("Status()[0].Warning = %q, want it to say the certificate expires soon", st[0].Warning)
	}
	logMu.Lock()
	logged := logs.String()
	logMu.Unlock()
	if !strings.Contains(logged, `"msg":"certificate needs attention"`) || !strings.Contains(logged, "expires soon") {
		t.Errorf("no warning logged a day before expiry:\n%s", logged)
	}
	if err := m.Ready(t.Context()); err != nil {
		t.Errorf("Ready() = %v a day before expiry, want nil (it still serves)", err)
	}

	// Expired: not ready.
	setClock(time.Now().Add(91 * 24 * time.Hour))
	src.reloadQuiet(t.Context())
	if err := m.Ready(t.Context()); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("Ready() = %v after expiry, want an error saying it expired", err)
	}

	// A replacement for other names drops the old names' series.
	setClock(time.Now())
	certPEM, keyPEM = ca.Leaf(t, time.Now().Add(90*24*time.Hour), "c.example")
	os.WriteFile(certFile, certPEM, 0o600)
	os.WriteFile(keyFile, keyPEM, 0o600)
	if err := m.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := m.Status(); len(st) != 1 || st[0].Names[0] != "c.example" {
		t.Errorf("Status() after replacing the file = %+v, want c.example only", st)
	}
	if n := testutil.CollectAndCount(src.metrics.expiry); n != 1 {
		t.Errorf("%d expiry series after the replacement, want 1", n)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) != 0 {
		t.Errorf("GatherAndLint: %v %v", problems, err)
	}
}

// syncWriter serializes writes to w under mu.
type syncWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
