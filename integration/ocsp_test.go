package integration

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outrider-dev/outrider/internal/testcert"
	"golang.org/x/crypto/ocsp"
)

// ocspResponder is a loopback OCSP responder made of the real `openssl
// ocsp` responder code: each request is answered by `openssl ocsp -index
// index.txt -rsigner … -rkey … -CA … -reqin req -respout resp -nmin 1`
// behind a listener on 127.0.0.1. (OpenSSL 3.0's `-port` takes a port
// number only and binds every interface; these tests stay on loopback.)
// Responses are valid for a minute, openssl's smallest nextUpdate.
type ocspResponder struct {
	t       *testing.T
	openssl string
	dir     string
	addr    string
	ca      *testcert.CA

	mu  sync.Mutex
	srv *http.Server
}

func newOCSPResponder(t *testing.T, ca *testcert.CA) *ocspResponder {
	t.Helper()
	r := &ocspResponder{t: t, openssl: needTool(t, "openssl"), dir: t.TempDir(), ca: ca}
	signerPEM, signerKey := ca.OCSPSigner(t)
	for name, b := range map[string][]byte{"ca.pem": ca.CertPEM, "signer.pem": signerPEM, "signer.key": signerKey, "index.txt": nil} {
		if err := os.WriteFile(filepath.Join(r.dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The URL in the leaf needs the port up front; start binds it.
	r.addr = fmt.Sprintf("127.0.0.1:%d", pickPort(t))
	t.Cleanup(r.stop)
	return r
}

// url is the responder URL for a leaf's OCSP extension.
func (r *ocspResponder) url() string { return "http://" + r.addr + "/" }

// setIndex writes index.txt (openssl ca's database) with one line for the
// leaf: valid, or revoked a minute ago.
func (r *ocspResponder) setIndex(leafPEM []byte, revoked bool) {
	r.t.Helper()
	b, _ := pem.Decode(leafPEM)
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		r.t.Fatal(err)
	}
	const asn1Time = "060102150405Z"
	serial := fmt.Sprintf("%X", leaf.SerialNumber)
	if len(serial)%2 == 1 {
		serial = "0" + serial // openssl writes whole bytes
	}
	status, revokedAt := "V", ""
	if revoked {
		status, revokedAt = "R", time.Now().Add(-time.Minute).UTC().Format(asn1Time)
	}
	line := strings.Join([]string{status, leaf.NotAfter.UTC().Format(asn1Time), revokedAt, serial, "unknown", "/CN=" + leaf.Subject.CommonName}, "\t") + "\n"
	if err := os.WriteFile(filepath.Join(r.dir, "index.txt"), []byte(line), 0o600); err != nil {
		r.t.Fatal(err)
	}
}

// start listens on the responder's address.
func (r *ocspResponder) start() {
	r.t.Helper()
	var l net.Listener
	waitFor(r.t, 5*time.Second, func() (err error) { l, err = net.Listen("tcp", r.addr); return err })
	srv := &http.Server{Handler: http.HandlerFunc(r.answer), ReadHeaderTimeout: 5 * time.Second}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	go srv.Serve(l)
}

// stop closes the listener: fetches get connection refused.
func (r *ocspResponder) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		r.srv.Close()
		r.srv = nil
	}
}

func (r *ocspResponder) answer(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 64<<10))
	if err != nil || req.Method != http.MethodPost {
		http.Error(w, "POST an OCSP request", http.StatusBadRequest)
		return
	}
	tmp, err := os.MkdirTemp(r.dir, "req-")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer os.RemoveAll(tmp)
	reqFile, respFile := filepath.Join(tmp, "req.der"), filepath.Join(tmp, "resp.der")
	if err := os.WriteFile(reqFile, body, 0o600); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	p := func(name string) string { return filepath.Join(r.dir, name) }
	out, err := exec.CommandContext(req.Context(), r.openssl, "ocsp", "-index", p("index.txt"),
		"-rsigner", p("signer.pem"), "-rkey", p("signer.key"), "-CA", p("ca.pem"),
		"-reqin", reqFile, "-respout", respFile, "-nmin", "1").CombinedOutput()
	if err != nil {
		http.Error(w, fmt.Sprintf("openssl ocsp: %v: %s", err, out), http.StatusInternalServerError)
		return
	}
	resp, err := os.ReadFile(respFile)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/ocsp-response")
	w.Write(resp)
}

// ocspEnv is outrider serving a static leaf for a.example whose OCSP URL
// is a loopback responder.
type ocspEnv struct {
	ca      *testcert.CA
	resp    *ocspResponder
	leafPEM []byte
	leaf    *x509.Certificate
	px      *proc
	https   string
	admin   string
}

// startOCSPEnv starts outrider with --ocsp-refresh-interval 1s; the
// responder's index says good and it runs unless down is set.
func startOCSPEnv(t *testing.T, mustStaple, down bool) *ocspEnv {
	t.Helper()
	e := &ocspEnv{ca: testcert.NewCA(t)}
	e.resp = newOCSPResponder(t, e.ca)
	leafPEM, keyPEM := e.ca.LeafWith(t, testcert.LeafOptions{OCSPServer: e.resp.url(), MustStaple: mustStaple}, "a.example")
	e.leafPEM = leafPEM
	b, _ := pem.Decode(leafPEM)
	e.leaf, _ = x509.ParseCertificate(b.Bytes)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	// The issuer goes in the file, as in a full chain: the request names it.
	if err := os.WriteFile(certFile, append(bytes.Clone(leafPEM), e.ca.CertPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	e.resp.setIndex(leafPEM, false)
	if !down {
		e.resp.start()
	}
	app := startApp(t)
	e.px = startOutrider(t, "proxy", "--listen", "127.0.0.1:0", "--http-listen", "", "--admin-listen", "127.0.0.1:0",
		"--upstream", "http://"+app.addr("addr"), "--cert", certFile, "--key", keyFile, "--ocsp-refresh-interval", "1s")
	e.https, e.admin = e.px.addr("https_addr"), e.px.addr("admin_addr")
	return e
}

// staple does a TLS handshake that asks for certificate status, as
// browsers do, and returns the stapled response (nil: none).
func (e *ocspEnv) staple(t *testing.T) *ocsp.Response {
	t.Helper()
	var raw []byte
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.https, &tls.Config{
		ServerName: "a.example", RootCAs: e.ca.Pool(),
		VerifyConnection: func(cs tls.ConnectionState) error { raw = cs.OCSPResponse; return nil },
	})
	if err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	conn.Close()
	if raw == nil {
		return nil
	}
	r, err := ocsp.ParseResponseForCert(raw, e.leaf, e.ca.Cert)
	if err != nil {
		t.Fatalf("stapled OCSP response: %v", err)
	}
	return r
}

// waitStaple waits until the stapled response's status is want (-1: none).
func (e *ocspEnv) waitStaple(t *testing.T, want int) *ocsp.Response {
	t.Helper()
	var r *ocsp.Response
	waitFor(t, 15*time.Second, func() error {
		r = e.staple(t)
		got := -1
		if r != nil {
			got = r.Status
		}
		if got != want {
			return fmt.Errorf("stapled status %d, want %d", got, want)
		}
		return nil
	})
	return r
}

// ocspStatus returns /status's OCSP state and warning for a.example.
func (e *ocspEnv) ocspStatus(t *testing.T) (ocspState map[string]any, warning string) {
	t.Helper()
	var st struct {
		Certificates []struct {
			Names   []string       `json:"names"`
			Warning string         `json:"warning"`
			OCSP    map[string]any `json:"ocsp"`
		} `json:"certificates"`
	}
	getJSON(t, plainClient, "http://"+e.admin+"/status", &st)
	for _, c := range st.Certificates {
		if len(c.Names) == 1 && c.Names[0] == "a.example" {
			return c.OCSP, c.Warning
		}
	}
	t.Fatalf("/status has no certificate for a.example: %+v", st)
	return nil, ""
}

// A static certificate naming an OCSP responder gets its response stapled;
// with the responder down the last response is stapled until its
// nextUpdate and then dropped, with warnings; a revocation shows in the
// next staple. Responses from openssl live a minute, so this test waits
// for one to expire (about a minute, in parallel with the others).
func TestOCSPStapleFromOpenSSLResponder(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startOCSPEnv(t, false, false)
	e.px.waitLog(15*time.Second, `"msg":"OCSP response stapled"`)
	good := e.waitStaple(t, ocsp.Good)
	if st, warn := e.ocspStatus(t); st["status"] != "good" || st["stapled"] != true || warn != "" {
		t.Errorf("/status ocsp = %v, warning %q; want a good staple and no warning", st, warn)
	}
	_, metrics, _ := get(t, plainClient, "http://"+e.admin+"/metrics")
	if v := metricValue(metrics, `outrider_certs_ocsp_stapled{domain="a.example"}`); v != 1 {
		t.Errorf("outrider_certs_ocsp_stapled = %v, want 1", v)
	}

	// A second client: openssl s_client -status reads the same staple.
	out, err := exec.Command(e.resp.openssl, "s_client", "-connect", e.https, "-servername", "a.example", "-status").CombinedOutput()
	if err != nil && !bytes.Contains(out, []byte("OCSP Response Status")) {
		t.Fatalf("openssl s_client: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("OCSP Response Status: successful")) || !bytes.Contains(out, []byte("Cert Status: good")) {
		t.Errorf("openssl s_client -status shows no good staple:\n%s", out)
	}

	// Responder down: each failed refresh warns, the last response is
	// stapled until its nextUpdate, then none is.
	e.resp.stop()
	e.px.waitLog(10*time.Second, "OCSP refresh failed; stapling the last response until its next update")
	last := e.staple(t)
	if last == nil || last.Status != ocsp.Good || last.NextUpdate.Before(good.NextUpdate) {
		t.Fatalf("staple with the responder down = %+v, want the last good response", last)
	}
	if st, _ := e.ocspStatus(t); st["last_error"] == nil || st["stapled"] != true {
		t.Errorf("/status ocsp with the responder down = %v, want the last error and still stapled", st)
	}
	if d := time.Until(last.NextUpdate); d > 2*time.Second {
		time.Sleep(d - 2*time.Second) // just before: still stapled
		if r := e.staple(t); r == nil || r.Status != ocsp.Good {
			t.Errorf("staple just before its next update = %+v, want the good one", r)
		}
	}
	e.waitStaple(t, -1)
	if time.Now().Before(last.NextUpdate) {
		t.Errorf("staple dropped at %v, before its next update %v", time.Now(), last.NextUpdate)
	}
	e.px.waitLog(5*time.Second, "OCSP response passed its next update; serving the certificate without a staple")
	_, metrics, _ = get(t, plainClient, "http://"+e.admin+"/metrics")
	if v := metricValue(metrics, `outrider_certs_ocsp_stapled{domain="a.example"}`); v != 0 {
		t.Errorf("outrider_certs_ocsp_stapled = %v past next update, want 0", v)
	}

	// Revoked, and the responder back: the next staple says so.
	e.resp.setIndex(e.leafPEM, true)
	e.resp.start()
	if r := e.waitStaple(t, ocsp.Revoked); r.RevokedAt.IsZero() {
		t.Errorf("revoked staple has no revocation time: %+v", r)
	}
	e.px.waitLog(5*time.Second, `"msg":"certificate revoked, says its OCSP responder; replace it"`)
	if st, warn := e.ocspStatus(t); st["status"] != "revoked" || !strings.Contains(warn, "revoked") {
		t.Errorf("/status ocsp = %v, warning %q; want revoked with a warning", st, warn)
	}
}

// A must-staple certificate whose responder is down from the start is
// a warning at load, on /status and /readyz, and is served without a staple.
func TestOCSPMustStapleResponderDownWarnsAtLoad(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startOCSPEnv(t, true, true)
	line := e.px.waitLog(15*time.Second, `"msg":"OCSP fetch failed; serving the certificate without a staple"`)
	if !strings.Contains(line, `"level":"WARN"`) || !strings.Contains(line, `"must_staple":true`) {
		t.Errorf("load warning = %s, want a WARN with must_staple true", line)
	}
	if r := e.staple(t); r != nil {
		t.Errorf("staple = %+v with the responder down, want none", r)
	}
	if st, warn := e.ocspStatus(t); st["must_staple"] != true || !strings.Contains(warn, "must-staple certificate has no fresh OCSP response") {
		t.Errorf("/status ocsp = %v, warning %q; want a must-staple warning", st, warn)
	}
	code, body, _ := get(t, plainClient, "http://"+e.admin+"/readyz")
	if code != http.StatusOK || !strings.Contains(body, "must-staple") {
		t.Errorf("/readyz = %d %q, want 200 with the must-staple warning", code, body)
	}
	// The responder comes up: the next retry staples a good response.
	e.resp.start()
	e.waitStaple(t, ocsp.Good)
	if _, warn := e.ocspStatus(t); warn != "" {
		t.Errorf("/status warning = %q after a good response, want none", warn)
	}
}
