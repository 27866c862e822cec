package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"testing"
	"time"
)

// echServer is a real TLS server on loopback with m's certificates and
// ECH keys, as the proxy's listener uses them (TLS 1.2 allowed). Each
// server name a handshake asked a certificate for is sent on names.
func echServer(t *testing.T, m *Manager, names chan<- string) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			names <- h.ServerName
			return m.GetCertificate(h)
		},
		GetEncryptedClientHelloKeys: m.ECHKeys(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.(*tls.Conn).Handshake()
				c.Read(make([]byte, 1))
			}()
		}
	}()
	return ln.Addr().String()
}

// dialECH connects with Go's ECH client to the inner name.
func dialECH(addr string, roots *x509.CertPool, list []byte) (tls.ConnectionState, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{
		ServerName: "inner.example", RootCAs: roots, MinVersion: tls.VersionTLS13,
		EncryptedClientHelloConfigList: list,
	})
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	return c.ConnectionState(), nil
}

func TestECHInnerNameServedAndRotatedKeyKept(t *testing.T) {
	dir := t.TempDir()
	// Real time: the internal CA issues the leaf with it, and the client
	// checks the leaf against the clock.
	now := time.Now()
	m, err := New(Config{Internal: true, Storage: dir, Domains: []string{"inner.example"},
		ECHPublicName: "public.example", ECHRotateInterval: time.Hour, ECHGrace: 10 * time.Minute,
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := m.ech.maintain(ctx); err != nil {
		t.Fatal(err)
	}
	rootPEM, err := InternalRootPEM(ctx, dir, EtcdConfig{})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	names := make(chan string, 10)
	addr := echServer(t, m, names)

	first := m.ECHConfigList()
	if stored, err := ECHConfigList(ctx, dir, EtcdConfig{}); err != nil || !bytes.Equal(stored, first) {
		t.Fatalf("ECHConfigList from storage = %x, %v; want the manager's %x", stored, err, first)
	}
	cs, err := dialECH(addr, roots, first)
	if err != nil {
		t.Fatal(err)
	}
	if !cs.ECHAccepted || cs.ServerName != "inner.example" || cs.PeerCertificates[0].VerifyHostname("inner.example") != nil {
		t.Fatalf("ECH accepted %v, server name %q, leaf %v; want the inner name served over ECH", cs.ECHAccepted, cs.ServerName, cs.PeerCertificates[0].DNSNames)
	}
	if got := <-names; got != "inner.example" {
		t.Errorf("server saw server name %q, want the decrypted inner name", got)
	}

	// Rotation: a new key is published; the old one is still accepted
	// during its grace period.
	now = now.Add(time.Hour)
	if err := m.ech.maintain(ctx); err != nil {
		t.Fatal(err)
	}
	second := m.ECHConfigList()
	if bytes.Equal(first, second) {
		t.Fatal("the ECHConfigList did not change after the rotation interval")
	}
	for name, list := range map[string][]byte{"old key in grace": first, "new key": second} {
		if cs, err := dialECH(addr, roots, list); err != nil || !cs.ECHAccepted {
			t.Errorf("%s: ECH accepted %v, err %v; want accepted", name, cs.ECHAccepted, err)
		}
		<-names
	}

	// Past the grace period the old key is refused: the server answers as
	// its public name and hands the client the current config to retry.
	now = now.Add(11 * time.Minute)
	if err := m.ech.maintain(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = dialECH(addr, roots, first)
	var rej *tls.ECHRejectionError
	if !errors.As(err, &rej) {
		t.Fatalf("old key after grace: err %v, want an ECH rejection verified against the public name", err)
	}
	if !bytes.Equal(rej.RetryConfigList, second) {
		t.Errorf("retry configs %x, want the current list %x", rej.RetryConfigList, second)
	}
	if got := <-names; got != "public.example" {
		t.Errorf("undecryptable hello: server saw server name %q, want the outer (public) name", got)
	}
}

func TestECHPublicNameGetsCertificate(t *testing.T) {
	m, err := New(Config{Internal: true, Storage: t.TempDir(), Domains: []string{"inner.example"}, ECHPublicName: "public.example"})
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Names(); len(got) != 2 || got[1] != "public.example" {
		t.Errorf("Names() = %q, want inner.example and the public name", got)
	}
	if _, err := New(Config{Internal: true, Storage: t.TempDir(), ECHPublicName: "*.example"}); err == nil {
		t.Error("a wildcard public name was accepted")
	}
}
