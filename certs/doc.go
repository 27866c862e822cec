// Package certs obtains, renews and serves TLS certificates: static PEM files
// reloaded on change, ACME through certmagic, or a local CA for development.
// It opens no listeners: callers put [Manager.GetCertificate] into a
// tls.Config and wrap their plain-HTTP handler with [Manager.HTTPHandler] for
// ACME HTTP-01 challenges. Static files whose leaf names an OCSP responder
// get its response stapled (certmagic staples ACME certificates). It is the
// only package that imports certmagic.
package certs
