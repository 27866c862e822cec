package proxy

import (
	"crypto/tls"
)

// intermediateSuites are the TLS 1.2 suites of Mozilla's "intermediate"
// profile: ECDHE key exchange with AES-GCM or ChaCha20-Poly1305 only. Go's
// defaults still include two CBC-SHA1 suites. TLS 1.3 suites are not
// configurable in Go and are all AEAD.
var intermediateSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// tlsConfig returns the server TLS configuration: TLS 1.2+, Mozilla
// intermediate suites, the post-quantum hybrid X25519MLKEM768 offered first,
// ALPN h2 then http/1.1 (and http/1.0) then any extra protocols.
func tlsConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), extraALPN []string, onHandshake func(tls.ConnectionState)) *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS12,
		CipherSuites:     intermediateSuites,
		CurvePreferences: []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256, tls.CurveP384},
		// http/1.0 for clients that offer nothing else (curl --http1.0,
		// old monitors): without it their handshake fails.
		NextProtos:     append([]string{"h2", "http/1.1", "http/1.0"}, extraALPN...),
		GetCertificate: getCert,
		// VerifyConnection runs on every completed server handshake, with or
		// without client certificates: it is where successes are counted.
		VerifyConnection: func(cs tls.ConnectionState) error {
			onHandshake(cs)
			return nil
		},
	}
}
