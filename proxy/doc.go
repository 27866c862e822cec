// Package proxy is outrider's HTTPS-terminating reverse proxy in front of a
// localhost-only app: TLS 1.2+ with Mozilla-intermediate suites, HTTP/2 and
// HTTP/1.1 over TCP, HTTP/3 over QUIC (quic-go) on the same port over UDP,
// WebSockets by HTTP/1.1 upgrade or extended CONNECT (RFC 8441, RFC 9220),
// all passed to the app as HTTP/1.1; forwarding headers the app can trust,
// idle-based timeouts, legacy-app fixes (Location, Set-Cookie Secure,
// Destination), a plain-HTTP redirect listener, metrics and an access log.
// Off by default, it shields a fragile app (shield.go and the files it
// names): PROXY protocol from trusted balancers, client certificates with
// identity headers, forward auth, per-client rate limits and an inflight
// cap, request buffering, and response compression.
//
// It does not obtain certificates (see package certs: the caller passes
// GetCertificate) and knows nothing about config sync or /top.
package proxy
