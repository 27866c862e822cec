package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config selects and configures the one certificate source of a Manager.
// Exactly one source is active: static files (CertFile and KeyFile), ACME
// (Domains without CertFile), or the internal CA (Internal).
type Config struct {
	// CertFile and KeyFile are PEM files served as they are and reloaded
	// when they change (including Kubernetes secret-volume ..data swaps).
	CertFile, KeyFile string

	// Domains are the names served. With ACME they are the names ordered;
	// with the internal CA the names issued (empty: any SNI asked).
	Domains []string

	// Internal turns on the local development CA kept in Storage.
	Internal bool

	// CheckInterval is how often static files are re-read even when no
	// file-system event arrived (events can be lost on some volumes).
	// If zero, one minute.
	CheckInterval time.Duration

	// Logger receives lifecycle events. If nil, logs are discarded.
	Logger *slog.Logger
	// Registerer receives the certs metrics. If nil, metrics are not exported.
	Registerer prometheus.Registerer
	// Now returns the current time. If nil, time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.CheckInterval == 0 {
		c.CheckInterval = time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports every problem with the configuration.
func (c Config) Validate() error {
	var errs []error
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("--cert and --key go together"))
	}
	if c.CertFile != "" && c.Internal {
		errs = append(errs, errors.New("--cert and --tls-internal are two certificate sources; choose one"))
	}
	if c.CheckInterval < 0 {
		errs = append(errs, fmt.Errorf("check interval %v is negative", c.CheckInterval))
	}
	return errors.Join(errs...)
}

// Status describes one certificate for /status and logs.
type Status struct {
	Names    []string  `json:"names"`
	Source   string    `json:"source"` // "file", "acme" or "internal"
	Issuer   string    `json:"issuer"`
	NotAfter time.Time `json:"not_after"`
	// LastError is the last failed load or renewal, empty when none.
	LastError string `json:"last_error,omitempty"`
}

// source is one origin of certificates. Implementations must be safe for
// concurrent use: getCertificate runs on every TLS handshake.
type source interface {
	getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error)
	// run keeps certificates fresh until ctx is done.
	run(ctx context.Context) error
	// reload re-reads or re-checks now; on failure the old state is kept.
	reload(ctx context.Context) error
	// ready returns nil when a valid certificate can be served.
	ready() error
	status() []Status
}

// Manager serves certificates from its one source. Use New.
type Manager struct {
	cfg     Config
	src     source
	metrics *metrics
}

// New validates cfg and prepares the source. It loads static files at once so
// that a bad file is an error at start-up, not at the first handshake.
func New(cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m := &Manager{cfg: cfg, metrics: newMetrics(cfg.Registerer)}
	switch {
	case cfg.CertFile != "":
		s, err := newStaticSource(cfg, m.metrics)
		if err != nil {
			return nil, err
		}
		m.src = s
	default:
		return nil, errors.New("no certificate source: give --cert and --key (ACME and the internal CA are not built yet)")
	}
	return m, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return m.src.getCertificate(hello)
}

// NextProtos returns ALPN protocols the source needs besides h2 and
// http/1.1 (acme-tls/1 for the TLS-ALPN-01 challenge), or nil.
func (m *Manager) NextProtos() []string { return nil }

// HTTPHandler wraps next so that ACME HTTP-01 challenges are answered before
// anything else; other requests go to next.
func (m *Manager) HTTPHandler(next http.Handler) http.Handler { return next }

// Names returns the names configured to be served, or nil when any name is
// served (the internal CA without Domains, or names taken from the files).
func (m *Manager) Names() []string { return m.cfg.Domains }

// Ready returns nil when a valid certificate is loaded, else what is missing.
func (m *Manager) Ready(context.Context) error { return m.src.ready() }

// Run keeps certificates fresh (file watching, renewals) until ctx is done.
func (m *Manager) Run(ctx context.Context) error { return m.src.run(ctx) }

// Reload re-reads static files now (SIGHUP). A failed reload keeps serving the
// previous certificate and returns why.
func (m *Manager) Reload(ctx context.Context) error { return m.src.reload(ctx) }

// Status lists the certificates currently served.
func (m *Manager) Status() []Status { return m.src.status() }
