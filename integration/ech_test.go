package integration

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestECHConfigPublishedOnAdminAndCLI(t *testing.T) {
	t.Parallel()
	skipShort(t)
	storage := t.TempDir()
	app := startApp(t)
	px := startOutrider(t, "proxy", "--upstream", "http://"+app.addr("addr"),
		"--tls-internal", "--domain", "inner.example", "--ech", "public.example", "--storage", storage,
		"--listen", "127.0.0.1:0", "--http-listen", "", "--admin-listen", "127.0.0.1:0")
	var fromAdmin string
	waitFor(t, 10*time.Second, func() error {
		code, body, _ := get(t, plainClient, "http://"+px.addr("admin_addr")+"/ech")
		if code != 200 {
			return fmt.Errorf("/ech = %d %q", code, body)
		}
		fromAdmin = strings.TrimSpace(body)
		return nil
	})
	list, err := base64.StdEncoding.DecodeString(fromAdmin)
	if err != nil {
		t.Fatalf("/ech is not base64: %q", fromAdmin)
	}
	// An ECHConfigList: 2-byte length, then ECHConfig version 0xfe0d,
	// naming the public name.
	if len(list) < 6 || int(list[0])<<8|int(list[1]) != len(list)-2 || list[2] != 0xfe || list[3] != 0x0d ||
		!bytes.Contains(list, []byte("public.example")) {
		t.Errorf("/ech = %x, want an ECHConfigList for public.example", list)
	}
	out, err := exec.Command(bins.outrider, "ech", "config", "--storage", storage).CombinedOutput()
	if err != nil {
		t.Fatalf("outrider ech config: %v: %s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != fromAdmin {
		t.Errorf("outrider ech config = %q, want what /ech serves, %q", got, fromAdmin)
	}
	// The public name has a certificate: clients whose ECH is rejected
	// verify the server against it.
	if leaf, err := servedChain(px.addr("https_addr"), "public.example", nil); leaf == nil || leaf.VerifyHostname("public.example") != nil {
		t.Errorf("handshake for public.example: %v, want a certificate for it (from the internal CA)", err)
	}
	// A real ECH handshake through the proxy: accepted, the inner name
	// served.
	roots := x509.NewCertPool()
	roots.AddCert(caRoot(t, storage))
	c, err := tls.Dial("tcp", px.addr("https_addr"), &tls.Config{ServerName: "inner.example", RootCAs: roots,
		EncryptedClientHelloConfigList: list, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatalf("ECH handshake through the proxy: %v", err)
	}
	st := c.ConnectionState()
	c.Close()
	if !st.ECHAccepted || st.PeerCertificates[0].VerifyHostname("inner.example") != nil {
		t.Errorf("ECH accepted = %v, leaf for %v; want accepted and inner.example", st.ECHAccepted, st.PeerCertificates[0].DNSNames)
	}
	// Secrets stay in storage: the private key never reaches the log.
	if strings.Contains(px.output(), "private_key") {
		t.Error("the ECH private key field appears in the log")
	}
}
