package integration

import (
	"crypto/x509"
	"net"
	"testing"
	"time"
)

func TestACMEIPAddressCertificateUsesShortlivedProfile(t *testing.T) {
	t.Parallel()
	// Pebble's default profile lasts 90 days, its shortlived one 45: the
	// lifetime tells which profile the order named. (An order naming no
	// profile gets a random one from Pebble, so the DNS name's lifetime
	// proves nothing and is not checked.)
	e := startACME(t, http01, pebbleOpts{}, "--domain", "127.0.0.1")
	var ipLeaf = waitServedName(t, e, "127.0.0.1")
	if len(ipLeaf.IPAddresses) != 1 || !ipLeaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) || len(ipLeaf.DNSNames) != 0 {
		t.Errorf("IP certificate names: IPs %v, DNS %v; want only 127.0.0.1", ipLeaf.IPAddresses, ipLeaf.DNSNames)
	}
	if life := ipLeaf.NotAfter.Sub(ipLeaf.NotBefore); life > 46*24*time.Hour {
		t.Errorf("IP certificate lives %v, want Pebble's shortlived 45 days", life)
	}
	e.waitServed(30*time.Second, "")
	e.px.waitLog(time.Second, `"msg":"IP address certificates are ordered with the shortlived ACME profile"`)
	// Requests by address, with no SNI, reach the app through the proxy.
	c := clientFor(e.px.addr("https_addr"), e.peb.Roots(), true)
	if code, _, _ := get(t, c, "https://127.0.0.1/"); code != 200 {
		t.Errorf("GET https://127.0.0.1/ = %d, want 200", code)
	}
	// Without --on-demand-ask a name outside --domain is never ordered.
	if leaf, err := servedChain(e.px.addr("https_addr"), "unknown.example", e.peb.Roots()); err == nil {
		t.Errorf("unknown.example got a valid certificate %v without --on-demand-ask", leaf.DNSNames)
	}
	if got := e.peb.Orders(); got != 2 {
		t.Errorf("Pebble saw %d orders, want 2 (the two --domain names)", got)
	}
}

// waitServedName waits until addr serves, for a handshake to name (no SNI
// for an IP address), a certificate chaining to Pebble and valid for name.
func waitServedName(t *testing.T, e *acmeEnv, name string) *x509.Certificate {
	t.Helper()
	var leaf *x509.Certificate
	waitFor(t, 30*time.Second, func() error {
		c, err := servedChain(e.px.addr("https_addr"), name, e.peb.Roots())
		leaf = c
		return err
	})
	return leaf
}
