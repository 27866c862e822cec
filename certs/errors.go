package certs

import "errors"

// ErrNoCertificate is returned when no certificate is loaded yet.
var ErrNoCertificate = errors.New("certs: no certificate loaded")
