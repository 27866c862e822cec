package certs_test

import (
	"crypto/tls"
	"fmt"
	"os"

	"github.com/outrider-dev/outrider/certs"
)

// A Manager with no Domains and no files serves leaves from the internal
// CA kept in Storage, for whatever name the client asks.
func ExampleNew() {
	dir, _ := os.MkdirTemp("", "certs-example")
	defer os.RemoveAll(dir)
	m, err := certs.New(certs.Config{Storage: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg := &tls.Config{GetCertificate: m.GetCertificate, NextProtos: append([]string{"h2", "http/1.1"}, m.NextProtos()...)}
	c, _ := cfg.GetCertificate(&tls.ClientHelloInfo{ServerName: "app.internal"})
	fmt.Println(c.Leaf.DNSNames, c.Leaf.Issuer.CommonName)
	// Output: [app.internal] outrider internal intermediate CA
}
