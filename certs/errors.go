package certs

import "errors"

// ErrNoCertificate is returned when no certificate is loaded yet.
var ErrNoCertificate = errors.New("certs: no certificate loaded")

// ErrStorageUnsupported is returned for a --storage location whose backend
// is not built into this binary.
var ErrStorageUnsupported = errors.New("certs: storage backend not supported")

// ErrDuplicateLimit is returned (and logged) when ordering a certificate
// would exceed the duplicate-certificate limit for its name set.
var ErrDuplicateLimit = errors.New("certs: duplicate certificate limit reached")

// ErrNoInternalCA is returned when the internal CA has not been created in
// the storage asked for.
var ErrNoInternalCA = errors.New("certs: no internal CA in storage")

// ErrNameNotAllowed is returned by the internal CA for a server name it does
// not issue for (not among Domains, or not a valid host name).
var ErrNameNotAllowed = errors.New("certs: server name not allowed")

// ErrOnDemandRefused is returned for a handshake whose name the
// --on-demand-ask URL did not allow (a non-2xx answer, or no answer).
var ErrOnDemandRefused = errors.New("certs: on-demand certificate not allowed")

// ErrOnDemandCap is returned for a new on-demand name once
// Config.OnDemandMaxNames names have certificates.
var ErrOnDemandCap = errors.New("certs: on-demand name cap reached")

// ErrOnDemandRate is returned (and the order not placed) when an
// on-demand name would exceed Config.OnDemandRate new orders a minute.
var ErrOnDemandRate = errors.New("certs: on-demand order rate limit reached")
