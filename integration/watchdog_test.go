package integration

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outrider-dev/outrider/internal/testcert"
)

// storedFile returns the path of the file certmagic keeps for acmeName
// with the given extension (.crt, .key, .json) under storage.
func (e *acmeEnv) storedFile(ext string) string {
	e.t.Helper()
	var found string
	filepath.WalkDir(e.storage, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == acmeName+ext && strings.Contains(p, "certificates") {
			found = p
		}
		return nil
	})
	if found == "" {
		e.t.Fatalf("no %s%s under %s", acmeName, ext, e.storage)
	}
	return found
}

func (e *acmeEnv) waitReadyz(timeout time.Duration, code int, substr string) string {
	e.t.Helper()
	var body string
	waitFor(e.t, timeout, func() error {
		var c int
		c, body = e.admin("/readyz")
		if c != code || !strings.Contains(body, substr) {
			return fmt.Errorf("/readyz = %d %q, want %d containing %q", c, strings.TrimSpace(body), code, substr)
		}
		return nil
	})
	return strings.TrimSpace(body)
}

func TestACMERenews30sCertificateWithDefaultFlags(t *testing.T) {
	t.Parallel()
	// The default check interval (10m) is far longer than the certificate:
	// renewal must be scheduled from the certificate's own lifetime.
	// (--acme-profile default: Pebble gives an order without a profile a
	// random one.)
	e := startACME(t, http01, pebbleOpts{Validity: 30 * time.Second}, "--acme-renew-check-interval", "10m", "--acme-profile", "default")
	first := e.waitServed(30*time.Second, "")
	var renewed time.Time
	waitFor(t, 40*time.Second, func() error {
		c, err := e.served()
		if err != nil {
			return err
		}
		if time.Now().After(c.NotAfter) {
			t.Fatalf("served an expired certificate (expired %v)", c.NotAfter)
		}
		if !c.NotAfter.After(first.NotAfter) {
			return fmt.Errorf("still serving the first certificate (expires %v)", first.NotAfter)
		}
		renewed = time.Now()
		return nil
	})
	t.Logf("30 s certificate renewed %.1fs after it was issued, %.1fs before it expired (default --acme-renew-check-interval)",
		renewed.Sub(first.NotBefore).Seconds(), first.NotAfter.Sub(renewed).Seconds())
	if v := e.metric(`outrider_certs_degraded{domain="test.example"}`); v != 0 {
		t.Errorf("degraded = %v after a renewal in time, want 0", v)
	}
}

func TestACMEWatchdogReportsStalledRenewal(t *testing.T) {
	t.Parallel()
	e := startACME(t, http01, pebbleOpts{Validity: 20 * time.Second}, "--acme-profile", "default")
	leaf := e.waitServed(30*time.Second, "")
	e.peb.Block() // every renewal fails from now on
	body := e.waitReadyz(25*time.Second, 503, "last tenth of its lifetime")
	t.Logf("/readyz in the last tenth: %s", body)
	if v := e.metric(`outrider_certs_served_expiry_timestamp_seconds{domain="test.example"}`); v != float64(leaf.NotAfter.Unix()) {
		t.Errorf("served_expiry = %v, want %v", v, leaf.NotAfter.Unix())
	}
	if v := e.metric(`outrider_certs_degraded{domain="test.example"}`); v != 1 {
		t.Errorf("degraded = %v, want 1", v)
	}
	if st := e.status(); !strings.Contains(st.Warning, "last tenth") && !strings.Contains(st.Warning, "expired") {
		t.Errorf("/status warning = %q, want the watchdog's reason", st.Warning)
	}
	e.waitReadyz(10*time.Second, 503, "serving an expired certificate")
	// Logged every check until fixed, not once.
	waitFor(t, 10*time.Second, func() error {
		if n := countLines(e.px, `"msg":"served certificate needs attention"`); n < 3 {
			return fmt.Errorf("%d watchdog warnings logged, want one per check (>= 3)", n)
		}
		return nil
	})
}

func TestACMEWatchdogReportsMissedReload(t *testing.T) {
	t.Parallel()
	e := startACME(t, http01, pebbleOpts{})
	leaf := e.waitServed(30*time.Second, "")
	e.waitReadyz(10*time.Second, 200, "")
	// What another replica sharing the storage would leave: a newer
	// certificate for the name that this process never loaded.
	certPEM, _ := testcert.NewCA(t).Leaf(t, leaf.NotAfter.Add(24*time.Hour), acmeName)
	if err := os.WriteFile(e.storedFile(".crt"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	body := e.waitReadyz(15*time.Second, 503, "older than the one in storage")
	t.Logf("/readyz after a missed reload: %s", body)
	// The watchdog tried to load it first (it does not match the stored key).
	e.px.waitLog(time.Second, `"msg":"a newer certificate in storage could not be loaded"`)
	var st struct {
		Certificates []struct {
			Names          []string  `json:"names"`
			ServedNotAfter time.Time `json:"served_not_after"`
			StoredNotAfter time.Time `json:"stored_not_after"`
			Warning        string    `json:"warning"`
		} `json:"certificates"`
	}
	_, raw := e.admin("/status")
	if err := json.Unmarshal([]byte(raw), &st); err != nil || len(st.Certificates) != 1 {
		t.Fatalf("/status = %q (%v)", raw, err)
	}
	c := st.Certificates[0]
	if !c.ServedNotAfter.Equal(leaf.NotAfter) || !c.StoredNotAfter.After(leaf.NotAfter) || !strings.Contains(c.Warning, "not loaded") {
		t.Errorf("/status = %+v, want served %v, a later stored expiry, and the warning", c, leaf.NotAfter)
	}
}

func TestACMEWatchdogLoadsNewerCertificateFromStorage(t *testing.T) {
	t.Parallel()
	e := startACME(t, http01, pebbleOpts{})
	leaf := e.waitServed(30*time.Second, "")
	// Another replica's renewal: a newer certificate and its key in the
	// shared storage, months before this one's own renewal is due.
	certPEM, keyPEM := testcert.NewCA(t).Leaf(t, leaf.NotAfter.Add(24*time.Hour), acmeName)
	if err := os.WriteFile(e.storedFile(".key"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.storedFile(".crt"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() error {
		c, _ := servedChain(e.px.addr("https_addr"), acmeName, e.peb.Roots())
		if c == nil || !c.NotAfter.After(leaf.NotAfter) {
			return fmt.Errorf("still serving the certificate expiring %v", leaf.NotAfter)
		}
		return nil
	})
	e.px.waitLog(time.Second, `"msg":"loaded a newer certificate found in storage"`)
	if code, body := e.admin("/readyz"); code != 200 {
		t.Errorf("/readyz = %d %s, want 200 once the newer certificate is served", code, body)
	}
}

func TestACMEARIGuardRefusesStaleWindow(t *testing.T) {
	t.Parallel()
	e := startACME(t, http01, pebbleOpts{})
	leaf := e.waitServed(30*time.Second, "")
	e.px.stop()
	// A renewal window that began before the certificate was issued (one
	// left from an earlier certificate), with its chosen time past and no
	// refresh due: followed blindly it would order at once, and again
	// after every new certificate.
	meta := e.storedFile(".json")
	b, err := os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	var res map[string]any
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	issuerData, _ := res["issuer_data"].(map[string]any)
	if issuerData == nil {
		t.Fatalf("%s has no issuer_data: %s", meta, b)
	}
	start := leaf.NotBefore.Add(-2 * time.Hour)
	issuerData["renewal_info"] = map[string]any{
		"suggestedWindow": map[string]any{"start": start, "end": start.Add(time.Hour)},
		"_selectedTime":   start.Add(30 * time.Minute),
		"_retryAfter":     time.Now().Add(24 * time.Hour),
	}
	if b, err = json.Marshal(res); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(meta, b, 0o600); err != nil {
		t.Fatal(err)
	}
	orders := e.peb.Orders()
	e.px = startOutrider(t, e.args...)
	e.px.waitLog(20*time.Second, `"msg":"renewal refused: stale ARI window"`)
	if v := e.metric(`outrider_certs_renewals_refused_total{reason="stale_ari"}`); v < 1 {
		t.Errorf("renewals_refused_total{stale_ari} = %v, want >= 1", v)
	}
	if got := e.peb.Orders(); got != orders {
		t.Errorf("Pebble saw %d orders, want still %d", got, orders)
	}
	if cur := e.waitServed(10*time.Second, ""); cur.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("serving serial %v, want the stored %v", cur.SerialNumber, leaf.SerialNumber)
	}
}
