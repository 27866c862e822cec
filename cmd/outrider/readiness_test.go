package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/outrider-dev/outrider/certs"
	"github.com/outrider-dev/outrider/internal/admin"
	"github.com/outrider-dev/outrider/internal/testcert"
)

// Issue #12: behind a Service the CA's validation reaches only ready pods,
// so a first ACME certificate being obtained must not hold readiness back;
// anything else that lacks a valid certificate must.
func TestFirstOrdersPending(t *testing.T) {
	now := time.Now()
	acme := func(name string, notAfter, attempt time.Time, result string) certs.Status {
		return certs.Status{Names: []string{name}, Source: "acme", NotAfter: notAfter, LastAttempt: attempt, LastResult: result}
	}
	tests := []struct {
		name string
		st   []certs.Status
		want []string
	}{
		{"first order under way", []certs.Status{acme("a.example", time.Time{}, now, "")}, []string{"a.example"}},
		{"first order failing, retried", []certs.Status{acme("a.example", time.Time{}, now, "error")}, []string{"a.example"}},
		{"one served, one pending", []certs.Status{acme("a.example", now.Add(time.Hour), now, "success"), acme("b.example", time.Time{}, now, "")},
			[]string{"b.example"}},
		{"not attempted yet: a stored one may be loading", []certs.Status{acme("a.example", time.Time{}, time.Time{}, "")}, nil},
		{"refused by the duplicate guard", []certs.Status{acme("a.example", time.Time{}, now, "refused")}, nil},
		{"another name expired", []certs.Status{acme("a.example", now.Add(-time.Hour), now, "error"), acme("b.example", time.Time{}, now, "")}, nil},
		{"not acme", []certs.Status{{Names: []string{"a.example"}, Source: "internal", LastAttempt: now}}, nil},
	}
	for _, tt := range tests {
		if got := firstOrdersPending(tt.st); !slices.Equal(got, tt.want) {
			t.Errorf("%s: firstOrdersPending = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestListenAdvice(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("https listener: %w", syscall.EACCES), "--listen :8443"},
		{fmt.Errorf("https listener: %w", syscall.EACCES), "setcap cap_net_bind_service=+ep"},
		{fmt.Errorf("admin listener: %w", syscall.EADDRINUSE), "choose another with --admin-listen"},
	} {
		got := listenAdvice(tt.err, "--admin-listen")
		if !strings.Contains(got.Error(), tt.want) || !errors.Is(got, tt.err) {
			t.Errorf("listenAdvice(%v) = %q, want it to wrap the error and say %q", tt.err, got, tt.want)
		}
	}
}

// Issue #12: an unwritable --storage names the flag instead of failing on a
// lock file deep inside certmagic.
func TestCheckStorage(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	if err := checkStorage(certs.Config{Storage: filepath.Join(file, "sub")}); err == nil || !strings.Contains(err.Error(), "--storage") {
		t.Errorf("checkStorage(under a file) = %v, want an error naming --storage", err)
	}
	if err := checkStorage(certs.Config{Storage: filepath.Join(dir, "new")}); err != nil {
		t.Errorf("checkStorage(new dir) = %v", err)
	}
	if err := checkStorage(certs.Config{Storage: "etcd://127.0.0.1:2379/x"}); err != nil {
		t.Errorf("checkStorage(etcd) = %v, want nil (its client checks)", err)
	}
	if os.Geteuid() == 0 {
		return // root writes anywhere: the non-root hint cannot be shown
	}
	ro := filepath.Join(dir, "ro")
	os.Mkdir(ro, 0o500)
	err := checkStorage(certs.Config{Storage: filepath.Join(ro, "outrider")})
	if err == nil || !strings.Contains(err.Error(), "not running as root") || !strings.Contains(err.Error(), "--storage $HOME/.local/share/outrider") {
		t.Errorf("checkStorage(read-only parent) = %v, want the non-root hint", err)
	}
}

// Issue #12: a --cert close to expiry keeps the pod ready (it still
// serves) but /readyz says why an operator should look; an expired one is
// not ready.
func TestCertificateCheckWarnsNearExpiry(t *testing.T) {
	ca := testcert.NewCA(t)
	dir := t.TempDir()
	certPEM, keyPEM := ca.Leaf(t, time.Now().Add(90*24*time.Hour), "a.example")
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	os.WriteFile(certFile, certPEM, 0o600)
	os.WriteFile(keyFile, keyPEM, 0o600)
	var offset atomic.Int64
	m, err := certs.New(certs.Config{CertFile: certFile, KeyFile: keyFile,
		Now: func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	adm := admin.New(admin.Config{Checks: []admin.Check{{Name: "certificate", Func: certificateCheck(m, false)}}})
	readyz := func() (int, string) {
		m.Reload(t.Context()) // as SIGHUP would; the answer is computed at request time anyway
		rec := httptest.NewRecorder()
		adm.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := readyz(); code != 200 || body != "ok\n" {
		t.Errorf("/readyz with 90 days left = %d %q, want a plain ok", code, body)
	}
	offset.Store(int64(89 * 24 * time.Hour))
	if code, body := readyz(); code != 200 || !strings.Contains(body, "warning: certificate: a.example: certificate expires soon") {
		t.Errorf("/readyz a day before expiry = %d %q, want 200 with a warning", code, body)
	}
	offset.Store(int64(91 * 24 * time.Hour))
	if code, body := readyz(); code != 503 || !strings.Contains(body, "expired") {
		t.Errorf("/readyz after expiry = %d %q, want 503", code, body)
	}
}
