package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outrider-dev/outrider/internal/testcert"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/ocsp"
)

// fakeResponder is an in-memory OCSP responder signing with its CA's key:
// an http.RoundTripper, so that the stapler runs under synctest's fake
// clock (a real socket would keep the bubble from ever being idle). The
// integration test asks a real `openssl ocsp` over loopback.
type fakeResponder struct {
	ca       *testcert.CA
	validity time.Duration

	mu     sync.Mutex
	status int  // ocsp.Good, ocsp.Revoked or ocsp.Unknown
	down   bool // answer 503
	calls  int
}

func (f *fakeResponder) set(status int, down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status, f.down = status, down
}

func (f *fakeResponder) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeResponder) RoundTrip(req *http.Request) (*http.Response, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	answer := func(code int, b []byte) *http.Response {
		return &http.Response{StatusCode: code, Status: fmt.Sprint(code, " ", http.StatusText(code)), Request: req,
			Header: http.Header{"Content-Type": {"application/ocsp-response"}}, Body: io.NopCloser(bytes.NewReader(b))}
	}
	if f.down {
		return answer(http.StatusServiceUnavailable, nil), nil
	}
	if req.Method == http.MethodGet && req.URL.Path == "/issuer.der" {
		return answer(http.StatusOK, f.ca.Cert.Raw), nil
	}
	if req.Body == nil {
		return answer(http.StatusBadRequest, nil), nil
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, err
	}

	r, err := ocsp.ParseRequest(body)
	if err != nil {
		return answer(http.StatusBadRequest, nil), nil
	}
	now := time.Now()
	tmpl := ocsp.Response{Status: f.status, SerialNumber: r.SerialNumber,
		ThisUpdate: now, NextUpdate: now.Add(f.validity)}
	if f.status == ocsp.Revoked {
		tmpl.RevokedAt, tmpl.RevocationReason = now.Add(-time.Minute), ocsp.KeyCompromise
	}
	der, err := ocsp.CreateResponse(f.ca.Cert, f.ca.Cert, tmpl, f.ca.Key)
	if err != nil {
		return nil, err
	}
	return answer(http.StatusOK, der), nil
}

// ocspFixture is a static-certificate Manager whose stapler asks a
// fakeResponder, with its logs and metrics.
type ocspFixture struct {
	m    *Manager
	src  *staticSource
	resp *fakeResponder
	reg  *prometheus.Registry
	ca   *testcert.CA

	certFile, keyFile string

	mu   sync.Mutex
	logs bytes.Buffer
}

// newOCSPFixture writes a leaf for a.example (with its issuer in the file,
// unless the leaf has an issuer URL) and loads it. Call it inside the
// synctest bubble.
func newOCSPFixture(t *testing.T, opts testcert.LeafOptions) *ocspFixture {
	t.Helper()
	ca := testcert.NewCA(t)
	dir := t.TempDir()
	certPEM, keyPEM := ca.LeafWith(t, opts, "a.example")
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if opts.IssuerURL == "" {
		certPEM = append(certPEM, ca.CertPEM...)
	}
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	f := &ocspFixture{resp: &fakeResponder{ca: ca, validity: time.Hour, status: ocsp.Good}, reg: prometheus.NewRegistry(),
		ca: ca, certFile: certFile, keyFile: keyFile}
	var err error
	f.m, err = New(Config{CertFile: certFile, KeyFile: keyFile, Registerer: f.reg,
		Logger: slog.New(slog.NewJSONHandler(&syncWriter{w: &f.logs, mu: &f.mu}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	f.src = f.m.src.(*staticSource)
	f.src.ocsp.client = &http.Client{Transport: f.resp}
	return f
}

// run starts the stapler's loop; it stops at the end of the test.
func (f *ocspFixture) run(t *testing.T) (stop func()) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.src.ocsp.run(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("stapler run: %v", err)
		}
	})
	t.Cleanup(stop)
	synctest.Wait()
	return stop
}

func (f *ocspFixture) log() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.logs.String()
}

// stapled returns the status of the response a handshake gets, or -1
// when none is stapled.
func (f *ocspFixture) stapled(t *testing.T) int {
	t.Helper()
	c, err := f.m.GetCertificate(&tls.ClientHelloInfo{ServerName: "a.example"})
	if err != nil {
		t.Fatal(err)
	}
	if c.OCSPStaple == nil {
		return -1
	}
	r, err := ocsp.ParseResponseForCert(c.OCSPStaple, c.Leaf, f.resp.ca.Cert)
	if err != nil {
		t.Fatalf("stapled response does not parse: %v", err)
	}
	return r.Status
}

func (f *ocspFixture) gauge(v *prometheus.GaugeVec) float64 {
	return testutil.ToFloat64(v.WithLabelValues("a.example"))
}

func TestOCSPStapleRefreshedHalfWayKeptOnFailureDroppedWhenStale(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newOCSPFixture(t, testcert.LeafOptions{OCSPServer: "http://ocsp.test/"})
		stop := f.run(t)
		if got := f.stapled(t); got != ocsp.Good {
			t.Fatalf("staple after start = %d, want good (%d)\n%s", got, ocsp.Good, f.log())
		}
		st := f.m.Status()[0]
		if st.OCSP == nil || !st.OCSP.Stapled || st.OCSP.Status != "good" || st.OCSP.Responder != "http://ocsp.test/" || st.Warning != "" {
			t.Errorf("Status()[0] = %+v, OCSP %+v; want a good staple, no warning", st, st.OCSP)
		}
		if !strings.Contains(f.log(), `"msg":"OCSP response stapled"`) {
			t.Errorf("no stapled line logged:\n%s", f.log())
		}
		if got := f.gauge(f.src.metrics.ocspStapled); got != 1 {
			t.Errorf("ocsp_stapled = %v, want 1", got)
		}
		start := time.Now()
		if got := f.gauge(f.src.metrics.ocspNextUpdate); got != float64(start.Add(time.Hour).Unix()) {
			t.Errorf("ocsp_next_update_timestamp_seconds = %v, want %v", got, start.Add(time.Hour).Unix())
		}

		// Before half-way nothing is fetched; at half-way the responder is
		// down: the good staple is still served, with a warning.
		f.resp.set(ocsp.Good, true)
		time.Sleep(29 * time.Minute)
		synctest.Wait()
		if n := f.resp.count(); n != 1 {
			t.Errorf("%d fetches before half-way, want 1", n)
		}
		time.Sleep(time.Minute + time.Second)
		synctest.Wait()
		if got := f.stapled(t); got != ocsp.Good {
			t.Errorf("staple after a failed refresh = %d, want the last good one kept", got)
		}
		if !strings.Contains(f.log(), "OCSP refresh failed; stapling the last response until its next update") {
			t.Errorf("no warning for the failed refresh:\n%s", f.log())
		}
		if st := f.m.Status()[0]; st.OCSP.ConsecutiveFailures != 1 || !strings.Contains(st.OCSP.LastError, "503") || st.Warning != "" {
			t.Errorf("Status()[0] after a failed refresh = %+v, OCSP %+v; want one failure with its error, no warning", st, st.OCSP)
		}

		// Past nextUpdate (start + 1h) the staple is dropped.
		time.Sleep(time.Until(start.Add(time.Hour)))
		synctest.Wait()
		if got := f.stapled(t); got != -1 {
			t.Errorf("staple past next update = %d, want none", got)
		}
		if !strings.Contains(f.log(), "OCSP response passed its next update") {
			t.Errorf("no warning when the staple expired:\n%s", f.log())
		}
		if got := f.gauge(f.src.metrics.ocspStapled); got != 0 {
			t.Errorf("ocsp_stapled = %v past next update, want 0", got)
		}

		// Back, and revoked: the next retry (61m: after failures at 30,
		// 31, 33, 37 and 45m) staples it, and the certificate is degraded.
		f.resp.set(ocsp.Revoked, false)
		time.Sleep(time.Until(start.Add(61*time.Minute + time.Second)))
		synctest.Wait()
		if got := f.stapled(t); got != ocsp.Revoked {
			t.Errorf("staple after the responder came back = %d, want revoked (%d)\n%s", got, ocsp.Revoked, f.log())
		}
		if st := f.m.Status()[0]; !strings.Contains(st.Warning, "revoked") || st.OCSP.Status != "revoked" {
			t.Errorf("Status()[0] = %+v, OCSP %+v; want revoked with a warning", st, st.OCSP)
		}
		if got := f.gauge(f.src.metrics.ocspRevoked); got != 1 {
			t.Errorf("ocsp_revoked = %v, want 1", got)
		}
		if got := f.gauge(f.src.metrics.degraded); got != 1 {
			t.Errorf("degraded = %v for a revoked certificate, want 1", got)
		}
		if !strings.Contains(f.log(), `"level":"ERROR","msg":"certificate revoked, says its OCSP responder; replace it"`) {
			t.Errorf("no error logged for the revocation:\n%s", f.log())
		}
		if got := testutil.ToFloat64(f.src.metrics.ocspFetches.WithLabelValues(ocspResultError)); got != 5 {
			t.Errorf("ocsp_fetches_total{result=error} = %v, want 5", got)
		}

		// Without the loop a staple is still never served past nextUpdate.
		stop()
		time.Sleep(time.Hour)
		if got := f.stapled(t); got != -1 {
			t.Errorf("staple an hour later without refreshes = %d, want none", got)
		}
		if problems, err := testutil.GatherAndLint(f.reg); err != nil || len(problems) != 0 {
			t.Errorf("GatherAndLint: %v %v", problems, err)
		}
	})
}

// Certificates without an OCSP URL, the normal case since Let's Encrypt
// turned OCSP off, cost nothing: no fetch, no log line, no series.
func TestOCSPCertificateWithoutResponderIsLeftAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newOCSPFixture(t, testcert.LeafOptions{})
		f.run(t)
		time.Sleep(3 * time.Hour)
		synctest.Wait()
		if n := f.resp.count(); n != 0 {
			t.Errorf("%d OCSP fetches, want none", n)
		}
		if lines := strings.Split(strings.TrimSpace(f.log()), "\n"); len(lines) != 1 || !strings.Contains(lines[0], `"msg":"certificate loaded"`) {
			t.Errorf("OCSP logged for a certificate without a responder:\n%s", f.log())
		}
		if st := f.m.Status()[0]; st.OCSP != nil || st.Warning != "" {
			t.Errorf("Status()[0] = %+v, OCSP %+v; want no OCSP state, no warning", st, st.OCSP)
		}
		for _, v := range []*prometheus.GaugeVec{f.src.metrics.ocspStapled, f.src.metrics.ocspNextUpdate, f.src.metrics.ocspRevoked} {
			if n := testutil.CollectAndCount(v); n != 0 {
				t.Errorf("%d OCSP series, want none", n)
			}
		}
	})
}

func TestOCSPMustStapleWithoutFreshResponseWarns(t *testing.T) {
	t.Run("responder down at load", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newOCSPFixture(t, testcert.LeafOptions{OCSPServer: "http://ocsp.test/", MustStaple: true})
			f.resp.set(ocsp.Good, true)
			f.run(t)
			logged := f.log()
			if !strings.Contains(logged, `"level":"WARN","msg":"OCSP fetch failed; serving the certificate without a staple"`) ||
				!strings.Contains(logged, `"must_staple":true`) {
				t.Errorf("no must-staple warning at load:\n%s", logged)
			}
			st := f.m.Status()[0]
			if !strings.Contains(st.Warning, "must-staple certificate has no fresh OCSP response") || st.OCSP == nil || !st.OCSP.MustStaple {
				t.Errorf("Status()[0] = %+v, OCSP %+v; want a must-staple warning", st, st.OCSP)
			}
			if got := f.gauge(f.src.metrics.degraded); got != 1 {
				t.Errorf("degraded = %v, want 1", got)
			}
			if err := f.m.Ready(t.Context()); err != nil {
				t.Errorf("Ready() = %v; want nil (the certificate still serves)", err)
			}
			// Each failed retry warns again; a response clears it.
			before := strings.Count(f.log(), "OCSP fetch failed")
			time.Sleep(time.Minute + time.Second)
			synctest.Wait()
			if after := strings.Count(f.log(), "OCSP fetch failed"); after != before+1 {
				t.Errorf("%d fetch warnings after a retry, want %d", after, before+1)
			}
			f.resp.set(ocsp.Good, false)
			time.Sleep(2 * time.Minute)
			synctest.Wait()
			if st := f.m.Status()[0]; st.Warning != "" || f.stapled(t) != ocsp.Good {
				t.Errorf("Status()[0].Warning = %q after a good response, want none and a good staple", st.Warning)
			}
		})
	})
	t.Run("no responder URL", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := newOCSPFixture(t, testcert.LeafOptions{MustStaple: true})
			if !strings.Contains(f.log(), "must-staple certificate without an OCSP responder URL") {
				t.Errorf("no warning at load:\n%s", f.log())
			}
			if st := f.m.Status()[0]; !strings.Contains(st.Warning, "must-staple") {
				t.Errorf("Status()[0].Warning = %q, want a must-staple warning", st.Warning)
			}
		})
	})
}

func TestCheckOCSP(t *testing.T) {
	ca := testcert.NewCA(t)
	now := time.Now()
	signerPEM, _ := ca.OCSPSigner(t)
	signer := mustParsePEM(t, signerPEM)
	plainPEM, _ := ca.Leaf(t, now.Add(time.Hour), "not-a-responder.example")
	plain := mustParsePEM(t, plainPEM)
	tests := []struct {
		name    string
		resp    ocsp.Response
		wantErr string
	}{
		{"good", ocsp.Response{Status: ocsp.Good, ThisUpdate: now, NextUpdate: now.Add(time.Hour)}, ""},
		{"delegated responder", ocsp.Response{Status: ocsp.Good, ThisUpdate: now, NextUpdate: now.Add(time.Hour), Certificate: signer}, ""},
		{"responder without OCSPSigning", ocsp.Response{Status: ocsp.Good, ThisUpdate: now, NextUpdate: now.Add(time.Hour), Certificate: plain}, "may not sign"},
		{"unknown", ocsp.Response{Status: ocsp.Unknown, ThisUpdate: now, NextUpdate: now.Add(time.Hour)}, "unknown"},
		{"stale", ocsp.Response{Status: ocsp.Good, ThisUpdate: now.Add(-2 * time.Hour), NextUpdate: now.Add(-time.Hour)}, "stale"},
		{"from the future", ocsp.Response{Status: ocsp.Good, ThisUpdate: now.Add(time.Hour), NextUpdate: now.Add(2 * time.Hour)}, "future"},
		{"no next update, recent", ocsp.Response{Status: ocsp.Good, ThisUpdate: now.Add(-time.Hour)}, ""},
		{"no next update, old", ocsp.Response{Status: ocsp.Good, ThisUpdate: now.Add(-25 * time.Hour)}, "without next update"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkOCSP(&tt.resp, ca.Cert, now)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("checkOCSP() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
	if err := checkOCSP(&ocsp.Response{Status: ocsp.Unknown, ThisUpdate: now}, ca.Cert, now); !errors.Is(err, errOCSPUnknown) {
		t.Errorf("checkOCSP(unknown) = %v, want errOCSPUnknown", err)
	}
}

// A response signed by another CA is refused, and nothing is stapled.
func TestOCSPResponseFromAnotherCARefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newOCSPFixture(t, testcert.LeafOptions{OCSPServer: "http://ocsp.test/"})
		f.resp.ca = testcert.NewCA(t)
		f.run(t)
		if got := f.stapled(t); got != -1 {
			t.Errorf("staple = %d from another CA's response, want none", got)
		}
		if st := f.m.Status()[0]; !strings.Contains(st.OCSP.LastError, "signature") {
			t.Errorf("Status()[0].OCSP.LastError = %q, want a bad signature", st.OCSP.LastError)
		}
	})
}

// A replaced file takes its own OCSP state: none for a leaf without a
// responder, a fresh fetch for one with.
func TestOCSPStateFollowsReload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newOCSPFixture(t, testcert.LeafOptions{OCSPServer: "http://ocsp.test/"})
		f.run(t)
		replace := func(opts testcert.LeafOptions) {
			t.Helper()
			c, k := f.ca.LeafWith(t, opts, "a.example")
			os.WriteFile(f.certFile, append(c, f.ca.CertPEM...), 0o600)
			os.WriteFile(f.keyFile, k, 0o600)
			if err := f.m.Reload(t.Context()); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
		}
		replace(testcert.LeafOptions{})
		if got := f.stapled(t); got != -1 {
			t.Errorf("staple after replacing with a leaf without a responder = %d, want none", got)
		}
		if st := f.m.Status()[0]; st.OCSP != nil {
			t.Errorf("Status()[0].OCSP = %+v, want nil", st.OCSP)
		}
		if n := testutil.CollectAndCount(f.src.metrics.ocspStapled); n != 0 {
			t.Errorf("%d ocsp_stapled series, want none", n)
		}
		replace(testcert.LeafOptions{OCSPServer: "http://ocsp.test/"})
		if got := f.stapled(t); got != ocsp.Good {
			t.Errorf("staple after replacing with a leaf with a responder = %d, want good", got)
		}
		if n := f.resp.count(); n != 2 {
			t.Errorf("%d fetches, want 2 (one per leaf with a responder)", n)
		}
	})
}

// A file holding the leaf alone gets its issuer from the leaf's issuer URL.
func TestOCSPIssuerFetchedFromIssuerURL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newOCSPFixture(t, testcert.LeafOptions{OCSPServer: "http://ocsp.test/", IssuerURL: "http://ocsp.test/issuer.der"})
		f.run(t)
		if got := f.stapled(t); got != ocsp.Good {
			t.Errorf("staple = %d, want good\n%s", got, f.log())
		}
	})
}

func mustParsePEM(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
