package certs

import (
	"crypto/tls"
	"testing"

	"github.com/outrider-dev/outrider/internal/testcert"
)

// BenchmarkGetCertificate is the certificate lookup of every TLS handshake
// with static files, the source the proxy benchmarks use.
func BenchmarkGetCertificate(b *testing.B) {
	certFile, keyFile := testcert.NewCA(b).LeafFiles(b, b.TempDir(), "app.example")
	m, err := New(Config{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		b.Fatal(err)
	}
	hello := &tls.ClientHelloInfo{ServerName: "app.example"}
	b.ReportAllocs()
	for b.Loop() {
		if c, err := m.GetCertificate(hello); err != nil || c == nil {
			b.Fatal(err)
		}
	}
}
