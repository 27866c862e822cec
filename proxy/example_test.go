package proxy_test

import (
	"context"
	"crypto/tls"
	"log"

	"github.com/outrider-dev/outrider/proxy"
)

// A proxy in front of an app on 127.0.0.1:8080 with one static certificate.
// cmd/outrider takes GetCertificate from a certs.Manager instead.
func Example() {
	cert, err := tls.LoadX509KeyPair("cert.pem", "key.pem")
	if err != nil {
		log.Print(err)
		return
	}
	srv, err := proxy.New(proxy.Config{
		Listen:         ":443",
		HTTPListen:     ":80",
		Upstream:       "http://127.0.0.1:8080",
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil },
		Rewrites:       proxy.AllRewrites,
	})
	if err != nil {
		log.Print(err)
		return
	}
	if err := srv.Listen(); err != nil {
		log.Print(err)
		return
	}
	log.Print(srv.Serve(context.Background()))
}
