package integration

// Issue #14: client certificates made at test time, checked against a CA
// bundle and CRL that reload on change; identity headers for the app.

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outrider-dev/outrider/internal/testcert"
)

// writeAtomic replaces path's content by rename, as editors and the
// kubelet do.
func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// withCert returns an HTTPS client to e that presents cert (none if nil).
func withCert(e *proxyEnv, cert *testcert.ClientCert, h2 bool) *http.Client {
	c := clientFor(e.https, e.ca.Pool(), h2)
	if cert != nil {
		c.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{cert.TLS}
	}
	return c
}

// echoWith GETs /echo, sending hdr, and returns the status and what the
// app saw (zero unless 200).
func echoWith(c *http.Client, hdr ...string) (int, echo, error) {
	req, _ := http.NewRequest(http.MethodGet, "https://app.example/echo", nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, echo{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, echo{}, nil
	}
	var got echo
	err = jsonDecode(resp.Body, &got)
	return 200, got, err
}

func header(e echo, k string) string {
	if v := e.Header[k]; len(v) == 1 {
		return v[0]
	}
	return ""
}

func TestClientCertRequiredAndIdentityHeaders(t *testing.T) {
	skipShort(t)
	t.Parallel()
	clients := testcert.NewCA(t)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "clients.pem")
	writeAtomic(t, caFile, clients.CertPEM)
	e := startProxy(t, "--client-ca", caFile)

	alice := clients.Client(t, testcert.ClientOptions{CommonName: "alice", OrgUnits: []string{"eng"},
		DNSNames: []string{"alice.internal"}, URIs: []string{"spiffe://example.org/ns/prod/sa/alice"}})
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			code, got, err := echoWith(withCert(e, &alice, h2), "X-Client-Cert-Subject", "CN=admin", "X-Forwarded-Client-Cert", "By=forged")
			if err != nil || code != 200 {
				t.Fatalf("GET with a good certificate = %d, %v", code, err)
			}
			for k, want := range map[string]string{
				"X-Client-Cert-Subject":     "CN=alice,OU=eng",
				"X-Client-Cert-Issuer":      "CN=outrider test CA",
				"X-Client-Cert-Serial":      alice.Leaf.SerialNumber.Text(16),
				"X-Client-Cert-Dns":         "alice.internal",
				"X-Client-Cert-Uri":         "spiffe://example.org/ns/prod/sa/alice",
				"X-Client-Cert-Spiffe-Id":   "spiffe://example.org/ns/prod/sa/alice",
				"X-Client-Cert-Not-After":   alice.Leaf.NotAfter.UTC().Format(time.RFC3339),
				"X-Forwarded-Client-Cert":   "",
				"X-Client-Cert-Fingerprint": "", // checked below
			} {
				if k == "X-Client-Cert-Fingerprint" {
					continue
				}
				if v := header(got, k); v != want {
					t.Errorf("%s = %q, want %q", k, v, want)
				}
			}
			pemText, err := url.PathUnescape(header(got, "X-Client-Cert"))
			if err != nil || pemText != string(alice.CertPEM) {
				t.Errorf("X-Client-Cert unescapes to %q (%v), want the client's PEM", pemText, err)
			}
		})
	}

	// No certificate, or one from another CA: a TLS alert, not a request.
	stranger := testcert.NewCA(t).Client(t, testcert.ClientOptions{CommonName: "mallory"})
	for name, c := range map[string]*http.Client{"none": withCert(e, nil, false), "other CA": withCert(e, &stranger, false)} {
		if code, _, err := echoWith(c); err == nil {
			t.Errorf("%s: request answered %d, want the handshake refused", name, code)
		}
	}
	e.px.waitLog(10*time.Second, `"msg":"client certificate refused","component":"proxy","reason":"untrusted","subject":"CN=mallory"`)

	// curl, as an operator would try it.
	bin := needTool(t, "curl")
	certFile, keyFile, cacert := filepath.Join(dir, "alice.pem"), filepath.Join(dir, "alice.key"), filepath.Join(dir, "server-ca.pem")
	for f, b := range map[string][]byte{certFile: alice.CertPEM, keyFile: alice.KeyPEM, cacert: e.ca.CertPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	port := portOnly(e.https)
	base := []string{"-sS", "--max-time", "20", "--cacert", cacert, "--resolve", "app.example:" + port + ":127.0.0.1"}
	out, err := exec.Command(bin, append(base, "--cert", certFile, "--key", keyFile, "https://app.example:"+port+"/echo")...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"CN=alice,OU=eng"`) {
		t.Errorf("curl --cert: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, append(base, "https://app.example:"+port+"/echo")...).CombinedOutput(); err == nil {
		t.Errorf("curl without a certificate succeeded:\n%s", out)
	}

	m := metricsText(t, e.admin)
	for _, reason := range []string{"missing", "untrusted"} {
		if v := metricValue(m, `outrider_proxy_client_cert_refusals_total{reason="`+reason+`"}`); v < 1 {
			t.Errorf("client_cert_refusals_total{%s} = %v, want ≥ 1", reason, v)
		}
	}
}

func TestClientCertOptionalWithAllowRules(t *testing.T) {
	skipShort(t)
	t.Parallel()
	clients := testcert.NewCA(t)
	caFile := filepath.Join(t.TempDir(), "clients.pem")
	writeAtomic(t, caFile, clients.CertPEM)
	e := startProxy(t, "--client-ca", caFile, "--client-auth", "optional",
		"--allow-client", "cn=alice", "--allow-client", "uri=spiffe://example.org/ns/prod/*", "--allow-client", "ou=ops")

	code, got, err := echoWith(withCert(e, nil, false), "X-Client-Cert-Subject", "CN=alice")
	if err != nil || code != 200 {
		t.Fatalf("no certificate, optional: %d %v, want 200", code, err)
	}
	if v := header(got, "X-Client-Cert-Subject"); v != "" {
		t.Errorf("a client-sent X-Client-Cert-Subject reached the app: %q", v)
	}
	for _, tc := range []struct {
		name string
		opts testcert.ClientOptions
		want int
	}{
		{"cn rule", testcert.ClientOptions{CommonName: "alice"}, 200},
		{"uri prefix rule", testcert.ClientOptions{CommonName: "web", URIs: []string{"spiffe://example.org/ns/prod/sa/web"}}, 200},
		{"ou rule", testcert.ClientOptions{CommonName: "oncall", OrgUnits: []string{"ops"}}, 200},
		{"no rule matches", testcert.ClientOptions{CommonName: "bob", OrgUnits: []string{"eng"}}, 403},
		{"uri outside the prefix", testcert.ClientOptions{CommonName: "dev", URIs: []string{"spiffe://example.org/ns/dev/sa/web"}}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert := clients.Client(t, tc.opts)
			for _, h2 := range []bool{false, true} {
				code, got, err := echoWith(withCert(e, &cert, h2))
				if err != nil || code != tc.want {
					t.Fatalf("h2=%v: %d %v, want %d", h2, code, err, tc.want)
				}
				if code == 200 && header(got, "X-Client-Cert-Subject") == "" {
					t.Errorf("h2=%v: admitted, but the app got no X-Client-Cert-Subject", h2)
				}
			}
		})
	}
	if v := metricValue(metricsText(t, e.admin), `outrider_proxy_client_cert_refusals_total{reason="not_allowed"}`); v != 4 {
		t.Errorf("client_cert_refusals_total{not_allowed} = %v, want 4 (two certificates, h1 and h2)", v)
	}
}

func TestClientCAAndCRLReload(t *testing.T) {
	skipShort(t)
	t.Parallel()
	ca1, ca2 := testcert.NewCA(t), testcert.NewCA(t)
	dir := t.TempDir()
	caFile, crlFile := filepath.Join(dir, "clients.pem"), filepath.Join(dir, "clients.crl")
	writeAtomic(t, caFile, ca1.CertPEM)
	writeAtomic(t, crlFile, ca1.CRL(t))
	e := startProxy(t, "--client-ca", caFile, "--client-crl", crlFile)
	alice := ca1.Client(t, testcert.ClientOptions{CommonName: "alice"})
	bob := ca2.Client(t, testcert.ClientOptions{CommonName: "bob"})

	kept := withCert(e, &alice, false) // one keep-alive connection throughout
	if code, _, err := echoWith(kept); err != nil || code != 200 {
		t.Fatalf("alice before revocation: %d %v", code, err)
	}
	if _, _, err := echoWith(withCert(e, &bob, false)); err == nil {
		t.Fatal("bob, of a CA not yet trusted, was admitted")
	}

	// Revoke alice: new connections fail their handshake, and her open
	// connection is refused at its next request.
	writeAtomic(t, crlFile, ca1.CRL(t, alice.Leaf))
	waitFor(t, 10*time.Second, func() error {
		if _, _, err := echoWith(withCert(e, &alice, false)); err == nil {
			return fmt.Errorf("a revoked certificate still completes a handshake")
		}
		return nil
	})
	if code, _, err := echoWith(kept); err == nil && code != 403 {
		t.Errorf("alice's open connection after revocation: %d, want 403 or closed", code)
	}
	e.px.waitLog(10*time.Second, `"reason":"revoked","subject":"CN=alice"`)

	// Trust a second CA as well.
	writeAtomic(t, caFile, append(append([]byte{}, ca1.CertPEM...), ca2.CertPEM...))
	waitFor(t, 10*time.Second, func() error {
		if code, _, err := echoWith(withCert(e, &bob, false)); err != nil || code != 200 {
			return fmt.Errorf("bob after his CA was added: %d %v", code, err)
		}
		return nil
	})

	// A broken bundle is refused and the last good one stays.
	writeAtomic(t, caFile, []byte("not a certificate\n"))
	e.px.waitLog(10*time.Second, "client ca reload failed; keeping the previous one")
	if code, _, err := echoWith(withCert(e, &bob, false)); err != nil || code != 200 {
		t.Errorf("bob after a broken bundle was written: %d %v, want 200 from the last good bundle", code, err)
	}
	if v := metricValue(metricsText(t, e.admin), `outrider_proxy_client_ca_reloads_total{result="error"}`); v < 1 {
		t.Errorf("client_ca_reloads_total{error} = %v, want ≥ 1", v)
	}
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
