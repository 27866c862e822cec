package integration

import (
	"crypto/x509"
	"encoding/pem"
	"encoding/xml"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sslscanReport is the part of `sslscan --xml=-` the posture checks read.
type sslscanReport struct {
	Tests []struct {
		Protocols []struct {
			Type    string `xml:"type,attr"`
			Version string `xml:"version,attr"`
			Enabled string `xml:"enabled,attr"`
		} `xml:"protocol"`
		Ciphers []struct {
			Status     string `xml:"status,attr"`
			SSLVersion string `xml:"sslversion,attr"`
			Cipher     string `xml:"cipher,attr"`
			Bits       string `xml:"bits,attr"`
		} `xml:"cipher"`
		Certs []struct {
			Type string `xml:"type,attr"`
			Blob string `xml:"certificate-blob"`
		} `xml:"certificates>certificate"`
	} `xml:"ssltest"`
}

// runSSLScan scans addr with SNI name and returns the parsed report.
func runSSLScan(t *testing.T, addr, name string) sslscanReport {
	t.Helper()
	bin := needTool(t, "sslscan")
	cmd := exec.CommandContext(t.Context(), bin, "--xml=-", "--no-colour", "--show-certificate", "--sni-name="+name, addr)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sslscan %s: %v\n%s", addr, err, out)
	}
	i := strings.Index(string(out), "<?xml")
	if i < 0 {
		t.Fatalf("sslscan printed no XML:\n%s", out)
	}
	var r sslscanReport
	if err := xml.Unmarshal(out[i:], &r); err != nil {
		t.Fatalf("parsing sslscan XML: %v", err)
	}
	if len(r.Tests) != 1 {
		t.Fatalf("sslscan: %d results, want 1:\n%s", len(r.Tests), out)
	}
	return r
}

// weakness lists what the posture forbids in a scan: any protocol below TLS
// 1.2, and CBC-mode SHA-1, RC4, 3DES, NULL, EXPORT or anonymous suites.
func weaknesses(r sslscanReport) []string {
	var bad []string
	for _, p := range r.Tests[0].Protocols {
		if p.Enabled == "1" && (p.Type == "ssl" || p.Version == "1.0" || p.Version == "1.1") {
			bad = append(bad, "protocol "+p.Type+" "+p.Version+" enabled")
		}
	}
	for _, c := range r.Tests[0].Ciphers {
		name := strings.ToUpper(c.Cipher)
		cbcSHA1 := strings.HasSuffix(name, "-SHA") && !strings.Contains(name, "GCM") && !strings.Contains(name, "CHACHA20")
		for _, weak := range []string{"RC4", "DES", "NULL", "EXP", "ANON", "ADH", "AECDH", "MD5"} {
			if strings.Contains(name, weak) {
				cbcSHA1 = true
			}
		}
		if cbcSHA1 {
			bad = append(bad, "cipher "+c.SSLVersion+" "+c.Cipher+" accepted")
		}
	}
	return bad
}

// TestSSLScanPosture scans outrider's HTTPS listener with sslscan: only TLS
// 1.2 and 1.3, only AEAD suites, and a certificate that verifies against
// the test CA for the scanned name (checked from the certificate sslscan
// saw, and with `openssl s_client -verify_return_error` for the chain).
func TestSSLScanPosture(t *testing.T) {
	skipShort(t)
	t.Run("checker catches a stock Go server", func(t *testing.T) {
		// Go's TLS 1.2 defaults still accept ECDHE-*-AES-*-SHA (CBC): the
		// checker must see that, or it proves nothing about outrider.
		srv := httptest.NewTLSServer(http.NotFoundHandler())
		t.Cleanup(srv.Close)
		r := runSSLScan(t, strings.TrimPrefix(srv.URL, "https://"), "example.com")
		bad := weaknesses(r)
		t.Logf("stock Go server: %v", bad)
		if len(bad) == 0 {
			t.Error("the checker found nothing weak in a stock Go TLS server, which accepts CBC-SHA1 suites")
		}
	})

	e := startProxy(t)
	r := runSSLScan(t, e.https, "app.example")
	var protos, ciphers []string
	for _, p := range r.Tests[0].Protocols {
		if p.Enabled == "1" {
			protos = append(protos, p.Type+p.Version)
		}
	}
	for _, c := range r.Tests[0].Ciphers {
		ciphers = append(ciphers, c.SSLVersion+" "+c.Cipher)
	}
	t.Logf("sslscan: protocols %v; ciphers %v", protos, ciphers)
	for _, w := range weaknesses(r) {
		t.Errorf("sslscan: %s", w)
	}
	if len(protos) != 2 || protos[0] != "tls1.2" || protos[1] != "tls1.3" {
		t.Errorf("protocols %v, want exactly TLS 1.2 and 1.3", protos)
	}

	// The certificate sslscan was given verifies for the scanned name.
	var leaf *x509.Certificate
	for _, c := range r.Tests[0].Certs {
		if b, _ := pem.Decode([]byte(strings.TrimSpace(c.Blob))); b != nil {
			var err error
			if leaf, err = x509.ParseCertificate(b.Bytes); err != nil {
				t.Fatalf("parsing the scanned certificate: %v", err)
			}
		}
	}
	if leaf == nil {
		t.Fatal("sslscan showed no certificate")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "app.example", Roots: e.ca.Pool(), CurrentTime: time.Now()}); err != nil {
		t.Errorf("scanned certificate does not verify: %v", err)
	}

	// And the served chain verifies with OpenSSL too.
	openssl := needTool(t, "openssl")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.ca.Cert.Raw}), 0o644)
	cmd := exec.CommandContext(t.Context(), openssl, "s_client", "-connect", e.https, "-servername", "app.example",
		"-CAfile", caFile, "-verify_return_error", "-verify_hostname", "app.example", "-brief")
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Verification: OK") {
		t.Errorf("openssl s_client did not verify the chain: %v\n%s", err, out)
	}
}
