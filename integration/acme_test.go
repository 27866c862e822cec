package integration

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// acmeEnv is outrider in front of the stand-in app, getting certificates
// for test.example from a Pebble.
type acmeEnv struct {
	t       *testing.T
	peb     *pebble
	px      *proc
	storage string
	args    []string
}

const acmeName = "test.example"

// challenge selects which challenge outrider can answer: the other
// listener gets port 0, which turns its challenge type off.
type challenge int

const (
	http01 challenge = iota
	tlsALPN01
)

// startACME starts Pebble (unless given) and outrider with fixed loopback
// ports for the challenge Pebble validates.
func startACME(t *testing.T, ch challenge, opts pebbleOpts, extra ...string) *acmeEnv {
	t.Helper()
	skipShort(t)
	httpPort, tlsPort := pickPort(t), pickPort(t)
	opts.HTTPPort, opts.TLSPort = httpPort, tlsPort
	e := &acmeEnv{t: t, peb: startPebble(t, opts), storage: t.TempDir()}
	app := startApp(t)
	listen, httpListen := "127.0.0.1:0", "127.0.0.1:0"
	if ch == http01 {
		httpListen = "127.0.0.1:" + strconv.Itoa(httpPort)
	} else {
		listen = "127.0.0.1:" + strconv.Itoa(tlsPort)
	}
	e.args = append([]string{"proxy",
		"--upstream", "http://" + app.addr("addr"),
		"--domain", acmeName,
		"--acme-directory", e.peb.DirectoryURL,
		"--acme-ca-root", e.peb.CARootFile,
		"--acme-email", "ops@test.example",
		"--storage", e.storage,
		"--listen", listen, "--http-listen", httpListen,
		"--admin-listen", "127.0.0.1:0",
		"--acme-renew-check-interval", "1s",
	}, extra...)
	e.px = startOutrider(t, e.args...)
	return e
}

// restart stops outrider and starts it again with the same flags and storage.
func (e *acmeEnv) restart() {
	e.t.Helper()
	e.px.stop()
	e.px = startOutrider(e.t, e.args...)
}

func (e *acmeEnv) admin(path string) (int, string) {
	e.t.Helper()
	code, body, _ := get(e.t, plainClient, "http://"+e.px.addr("admin_addr")+path)
	return code, body
}

// served does a TLS handshake for test.example and returns the leaf,
// verified against Pebble's issuing root.
func (e *acmeEnv) served() (*x509.Certificate, error) {
	return servedChain(e.px.addr("https_addr"), acmeName, e.peb.Roots())
}

// servedChain fetches the certificate addr serves for name and verifies its
// chain against roots. On a verification failure it returns the leaf too.
func servedChain(addr, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{ServerName: name, InsecureSkipVerify: true})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	chain := conn.ConnectionState().PeerCertificates
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter}); err != nil {
		return chain[0], fmt.Errorf("%s serves a certificate that does not chain to the CA's root: %w", addr, err)
	}
	return chain[0], nil
}

// waitServed waits until a certificate chaining to Pebble is served and,
// when notSerial is given, differs from it.
func (e *acmeEnv) waitServed(timeout time.Duration, notSerial string) *x509.Certificate {
	e.t.Helper()
	var leaf *x509.Certificate
	waitFor(e.t, timeout, func() error {
		c, err := e.served()
		if err != nil {
			return err
		}
		if c.SerialNumber.String() == notSerial {
			return fmt.Errorf("still serving serial %s", notSerial)
		}
		leaf = c
		return nil
	})
	return leaf
}

func (e *acmeEnv) metric(series string) float64 {
	e.t.Helper()
	_, body := e.admin("/metrics")
	return metricValue(body, series)
}

type certStatus struct {
	Names               []string  `json:"names"`
	Source              string    `json:"source"`
	Issuer              string    `json:"issuer"`
	NotAfter            time.Time `json:"not_after"`
	LastResult          string    `json:"last_result"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	LastError           string    `json:"last_error"`
	Warning             string    `json:"warning"`
}

func (e *acmeEnv) status() certStatus {
	e.t.Helper()
	var st struct {
		Certificates []certStatus `json:"certificates"`
	}
	_, body := e.admin("/status")
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		e.t.Fatalf("/status is not JSON: %v: %q", err, body)
	}
	for _, c := range st.Certificates {
		if len(c.Names) == 1 && c.Names[0] == acmeName {
			return c
		}
	}
	e.t.Fatalf("/status has no certificate for %s: %s", acmeName, body)
	return certStatus{}
}

func TestACMEIssueHTTP01AndRestartReuses(t *testing.T) {
	t.Parallel()
	e := startACME(t, http01, pebbleOpts{})
	leaf := e.waitServed(30*time.Second, "")
	// A request through the proxy works with Pebble's root only.
	c := clientFor(e.px.addr("https_addr"), e.peb.Roots(), true)
	if code, _, _ := get(t, c, "https://"+acmeName+"/"); code != 200 {
		t.Errorf("GET https://%s/ = %d, want 200", acmeName, code)
	}
	waitFor(t, 5*time.Second, func() error {
		if code, body := e.admin("/readyz"); code != 200 {
			return fmt.Errorf("/readyz %d: %s", code, body)
		}
		return nil
	})
	if got := e.metric(`outrider_certs_expiry_timestamp_seconds{domain="test.example"}`); got != float64(leaf.NotAfter.Unix()) {
		t.Errorf("expiry metric = %v, want %v", got, leaf.NotAfter.Unix())
	}
	if st := e.status(); st.Source != "acme" || st.LastResult != "success" || !st.NotAfter.Equal(leaf.NotAfter) {
		t.Errorf("/status = %+v, want acme, success, not_after %v", st, leaf.NotAfter)
	}
	orders := e.peb.Orders()
	if orders != 1 {
		t.Errorf("Pebble saw %d orders, want 1", orders)
	}

	e.restart()
	again := e.waitServed(10*time.Second, "")
	if again.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("after restart serial %v, want the stored %v", again.SerialNumber, leaf.SerialNumber)
	}
	if got := e.peb.Orders(); got != orders {
		t.Errorf("restart ordered again: %d orders, want %d", got, orders)
	}
}

func TestACMEIssueTLSALPN01(t *testing.T) {
	t.Parallel()
	// Half the nonces rejected: certmagic (acmez) must retry badNonce.
	e := startACME(t, tlsALPN01, pebbleOpts{Env: []string{"PEBBLE_WFE_NONCEREJECT=50"}})
	e.waitServed(60*time.Second, "")
}

func TestACMERenewsShortLivedCertificate(t *testing.T) {
	t.Parallel()
	e := startACME(t, http01, pebbleOpts{Validity: 15 * time.Second}, "--acme-duplicate-limit", "-1")
	first := e.waitServed(30*time.Second, "")
	// During a rotation certmagic's cache may briefly hold both
	// certificates (each valid); wait for one that outlives the first.
	waitFor(t, 30*time.Second, func() error {
		c, err := e.served()
		if err != nil {
			return err
		}
		if !c.NotAfter.After(first.NotAfter) {
			return fmt.Errorf("serving a certificate expiring %v, not after the first's %v", c.NotAfter, first.NotAfter)
		}
		return nil
	})
	waitFor(t, 5*time.Second, func() error {
		if v := e.metric(`outrider_certs_renewals_total{result="success"}`); v < 2 {
			return fmt.Errorf("renewals_total{success} = %v, want >= 2", v)
		}
		return nil
	})
}

func TestACMEServerDownAtStart(t *testing.T) {
	t.Parallel()
	skipShort(t)
	// Pebble is unreachable from the start; outrider must come up at once.
	httpPort := pickPort(t)
	peb := startPebble(t, pebbleOpts{HTTPPort: httpPort, TLSPort: pickPort(t)})
	peb.Block()
	e := &acmeEnv{t: t, peb: peb, storage: t.TempDir()}
	app := startApp(t)
	e.args = []string{"proxy", "--upstream", "http://" + app.addr("addr"), "--domain", acmeName,
		"--acme-directory", peb.DirectoryURL, "--acme-ca-root", peb.CARootFile, "--storage", e.storage,
		"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:" + strconv.Itoa(httpPort),
		"--admin-listen", "127.0.0.1:0", "--acme-renew-check-interval", "1s"}
	began := time.Now()
	e.px = startOutrider(t, e.args...)
	if d := time.Since(began); d > 15*time.Second {
		t.Errorf("outrider took %v to be ready with the CA down", d)
	}
	// Issue #12: a first certificate is being obtained and this process
	// answers HTTP-01, so /readyz is 200 with a warning: behind a Service,
	// only a ready pod can be reached by the CA's validation.
	waitFor(t, 20*time.Second, func() error {
		code, body := e.admin("/readyz")
		if code != 200 || !strings.Contains(body, "warning: certificate: first certificate for "+acmeName) {
			return fmt.Errorf("/readyz = %d %q, want 200 with a warning naming the certificate", code, body)
		}
		if v := e.metric(`outrider_certs_renewals_total{result="error"}`); v < 1 {
			return fmt.Errorf("renewals_total{error} = %v, want >= 1", v)
		}
		return nil
	})
	_, body := e.admin("/readyz")
	t.Logf("/readyz while the CA is down: %s", strings.TrimSpace(body))
	peb.Unblock()
	// certmagic retries a failed order after one minute.
	e.waitServed(100*time.Second, "")
	waitFor(t, 5*time.Second, func() error {
		if code, body := e.admin("/readyz"); code != 200 || body != "ok\n" {
			return fmt.Errorf("/readyz %d: %q, want a plain ok", code, body)
		}
		return nil
	})
}

func TestACMEServerDownDuringRenewal(t *testing.T) {
	t.Parallel()
	e := startACME(t, http01, pebbleOpts{Validity: 20 * time.Second}, "--acme-duplicate-limit", "-1")
	old := e.waitServed(30*time.Second, "")
	e.peb.Block()
	// The renewal fails (at the latest in the emergency window, 5 checks
	// before expiry): visible on /metrics and /status, old certificate kept.
	waitFor(t, 30*time.Second, func() error {
		if v := e.metric(`outrider_certs_consecutive_failures{domain="test.example"}`); v < 1 {
			return fmt.Errorf("consecutive_failures = %v, want >= 1", v)
		}
		return nil
	})
	if st := e.status(); st.LastResult != "error" || st.ConsecutiveFailures < 1 || st.LastError == "" {
		t.Errorf("/status during the outage = %+v, want last_result error with the error", st)
	}
	if v := e.metric(`outrider_certs_last_renewal_success{domain="test.example"}`); v != 0 {
		t.Errorf("last_renewal_success = %v, want 0", v)
	}
	cur, err := e.served()
	if cur == nil || cur.SerialNumber.Cmp(old.SerialNumber) != 0 {
		t.Errorf("during the outage serving %v (%v), want the old certificate %v", cur, err, old.SerialNumber)
	}
	e.peb.Unblock()
	// certmagic's next renewal attempt comes one minute after the failure.
	e.waitServed(100*time.Second, old.SerialNumber.String())
	waitFor(t, 5*time.Second, func() error {
		if v := e.metric(`outrider_certs_consecutive_failures{domain="test.example"}`); v != 0 {
			return fmt.Errorf("consecutive_failures = %v after recovery, want 0", v)
		}
		return nil
	})
}

func TestACMEDuplicateGuardStopsReorderLoop(t *testing.T) {
	t.Parallel()
	// Certificates living 6 s are renewed over and over: a re-order loop.
	// With a limit of 2 per 7 days the third order must be refused.
	e := startACME(t, http01, pebbleOpts{Validity: 6 * time.Second}, "--acme-duplicate-limit", "2")
	e.px.waitLog(60*time.Second, `"msg":"certificate order refused"`)
	if v := e.metric(`outrider_certs_renewals_total{result="refused"}`); v < 1 {
		t.Errorf("renewals_total{refused} = %v, want >= 1", v)
	}
	if got := e.peb.Orders(); got != 2 {
		t.Errorf("Pebble saw %d orders, want 2 (the limit)", got)
	}
	if st := e.status(); st.LastResult != "refused" || !strings.Contains(st.LastError, "duplicate certificate limit") {
		t.Errorf("/status = %+v, want last_result refused naming the limit", st)
	}
}
