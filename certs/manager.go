package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
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

	// Internal turns on the local development CA kept in Storage. It is
	// also the source when neither CertFile nor Domains is given.
	Internal bool

	// Storage is where ACME accounts and certificates, the internal CA and
	// the order ledger are kept: a directory (created 0700, files 0600).
	// Required for ACME and the internal CA. An
	// etcd://host:2379[,host2:2379]/prefix location is shared by replicas
	// (see [EtcdConfig]).
	Storage string
	// Etcd configures the etcd client when Storage is an etcd:// location.
	Etcd EtcdConfig

	// ACMEDirectories are ACME directory URLs, tried in order when an order
	// fails (issuer fallback). If empty, Let's Encrypt production.
	ACMEDirectories []string
	// ACMEEmail is the ACME account contact; may be empty.
	ACMEEmail string
	// ACMECARootFile is a PEM file of roots that the ACME server's own HTTPS
	// is verified with (a private CA such as Pebble or step-ca). If empty,
	// the system roots.
	ACMECARootFile string
	// ACMEEABKeyID and ACMEEABHMACFile bind the ACME account to an external
	// account (ZeroSSL, Google): the key ID and a file holding the
	// base64url-encoded HMAC key. Both or neither.
	ACMEEABKeyID, ACMEEABHMACFile string
	// ACMEProfile selects an ACME profile offered by the server (such as
	// Let's Encrypt's "shortlived"); it is kept for renewals. If empty, the
	// server's default.
	ACMEProfile string

	// HTTPChallengePort is the local port of the plain-HTTP listener that
	// answers HTTP-01 challenges through [Manager.HTTPHandler]; certmagic
	// sees the port in use and leaves answering to that listener. If zero,
	// 80. DisableHTTPChallenge turns HTTP-01 off (no plain-HTTP listener).
	HTTPChallengePort    int
	DisableHTTPChallenge bool
	// TLSALPNChallengePort is the local port of the HTTPS listener that
	// answers TLS-ALPN-01 challenges through [Manager.GetCertificate] and
	// [Manager.NextProtos]. If zero, 443. DisableTLSALPNChallenge turns
	// TLS-ALPN-01 off.
	TLSALPNChallengePort    int
	DisableTLSALPNChallenge bool

	// RenewCheckInterval is how often ACME certificates are checked for
	// renewal (expiry and ARI windows) and the internal CA's leaves are
	// renewed. If zero, ten minutes. Failed orders and renewals are retried
	// on certmagic's schedule (1m, 2m, 2m, 5m, 10m … up to 1h between
	// attempts), which keeps failed validations under public CAs' limits.
	RenewCheckInterval time.Duration
	// DuplicateLimit is how many certificates for the same name set may be
	// obtained in 7 days (Let's Encrypt's duplicate-certificate limit is 5).
	// Every certificate obtained is recorded in Storage; an order beyond the
	// limit is refused with [ErrDuplicateLimit]. If zero, 5; negative: no
	// limit.
	DuplicateLimit int
	// ForceOrder orders even beyond DuplicateLimit.
	ForceOrder bool

	// InternalLifetime is the validity of internal-CA leaf certificates;
	// they are renewed when a third of it is left. If zero, 12 hours.
	InternalLifetime time.Duration
	// InternalMaxNames bounds the leaves the internal CA keeps for names it
	// issues on demand (no Domains); the least recently served is evicted
	// to make room, so a flood of names cannot lock a new one out. If zero,
	// 256.
	InternalMaxNames int
	// InternalIssueBurst and InternalIssueInterval rate-limit on-demand
	// issuance per client address (IPv6: per /64): a client may have
	// InternalIssueBurst new names at once, then one more per
	// InternalIssueInterval; beyond that its handshakes for new names fail
	// (names already issued are still served). If zero, 16 and 5s.
	InternalIssueBurst    int
	InternalIssueInterval time.Duration

	// ExpiryWarning is how long before expiry a certificate is reported as
	// degraded (metric, warning log, /status), capped at half its renewal
	// window so that short-lived certificates are not always flagged. If
	// zero, 7 days.
	ExpiryWarning time.Duration

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
	if len(c.ACMEDirectories) == 0 {
		c.ACMEDirectories = []string{LetsEncryptProduction}
	}
	if c.HTTPChallengePort == 0 {
		c.HTTPChallengePort = 80
	}
	if c.TLSALPNChallengePort == 0 {
		c.TLSALPNChallengePort = 443
	}
	if c.RenewCheckInterval == 0 {
		c.RenewCheckInterval = 10 * time.Minute
	}
	if c.DuplicateLimit == 0 {
		c.DuplicateLimit = 5
	}
	if c.InternalLifetime == 0 {
		c.InternalLifetime = 12 * time.Hour
	}
	if c.InternalMaxNames == 0 {
		c.InternalMaxNames = 256
	}
	if c.InternalIssueBurst == 0 {
		c.InternalIssueBurst = 16
	}
	if c.InternalIssueInterval == 0 {
		c.InternalIssueInterval = 5 * time.Second
	}
	if c.ExpiryWarning == 0 {
		c.ExpiryWarning = 7 * 24 * time.Hour
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
	// --cert with --domain is static files: the names then only say which
	// Host values are served (SPEC: ACME is "--domain without --cert").
	for name, d := range map[string]time.Duration{"check interval": c.CheckInterval,
		"renew check interval":          c.RenewCheckInterval,
		"internal certificate lifetime": c.InternalLifetime, "expiry warning": c.ExpiryWarning,
		"internal issue interval": c.InternalIssueInterval} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %v is negative", name, d))
		}
	}
	if c.InternalMaxNames < 0 || c.InternalIssueBurst < 0 {
		errs = append(errs, fmt.Errorf("internal CA bounds (%d names, burst %d) must not be negative", c.InternalMaxNames, c.InternalIssueBurst))
	}
	for _, d := range c.Domains {
		if err := checkName(d); err != nil {
			errs = append(errs, fmt.Errorf("--domain %q: %w", d, err))
		}
	}
	for _, u := range c.ACMEDirectories {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" {
			errs = append(errs, fmt.Errorf("--acme-directory %q is not an http(s) URL", u))
		}
	}
	if (c.ACMEEABKeyID == "") != (c.ACMEEABHMACFile == "") {
		errs = append(errs, errors.New("--acme-eab-kid and --acme-eab-hmac-file go together"))
	}
	for _, p := range []struct {
		flag string
		port int
	}{{"HTTP challenge port", c.HTTPChallengePort}, {"TLS-ALPN challenge port", c.TLSALPNChallengePort}} {
		if p.port < 0 || p.port > 65535 {
			errs = append(errs, fmt.Errorf("%s %d is out of range", p.flag, p.port))
		}
	}
	return errors.Join(errs...)
}

// LetsEncryptProduction is the default ACME directory.
const LetsEncryptProduction = "https://acme-v02.api.letsencrypt.org/directory"

// Status describes one certificate for /status and logs. Times are zero
// (and omitted, except NotAfter) when unknown.
type Status struct {
	Names  []string `json:"names"`
	Source string   `json:"source"` // "file", "acme" or "internal"
	// Issuer is the issuing CA's common name.
	Issuer    string    `json:"issuer"`
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after"`
	// RenewalDue is when the certificate enters its renewal window (the
	// last third of its lifetime); ACME ARI may renew it earlier.
	RenewalDue time.Time `json:"renewal_due,omitzero"`
	// LastAttempt is when an order or renewal was last attempted, and
	// LastResult its outcome: "success", "error", or "refused" (by the
	// duplicate-certificate guard).
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	LastResult  string    `json:"last_result,omitempty"`
	// ConsecutiveFailures counts failed or refused attempts since the last
	// success.
	ConsecutiveFailures int `json:"consecutive_failures"`
	// Warning says why the certificate needs an operator (missing, expired,
	// expiring soon, renewals failing); empty when it does not.
	Warning string `json:"warning,omitempty"`
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

// New validates cfg and prepares the source: static files when CertFile is
// set, the internal CA when Internal is set or no Domains are given, else
// ACME. It loads static files and the internal CA at once, so that a bad
// file is an error at start-up, not at the first handshake; it never waits
// for an ACME server (orders start in Run).
func New(cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m := &Manager{cfg: cfg, metrics: newMetrics(cfg.Registerer)}
	var err error
	switch {
	case cfg.CertFile != "":
		m.src, err = newStaticSource(cfg, m.metrics)
	case cfg.Internal || len(cfg.Domains) == 0:
		m.src, err = newInternalSource(cfg, m.metrics)
	default:
		m.src, err = newACMESource(cfg, m.metrics)
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return m.src.getCertificate(hello)
}

// NextProtos returns ALPN protocols the source needs besides h2 and
// http/1.1 (acme-tls/1 for the TLS-ALPN-01 challenge), or nil.
func (m *Manager) NextProtos() []string {
	if a, ok := m.src.(interface{ nextProtos() []string }); ok {
		return a.nextProtos()
	}
	return nil
}

// HTTPHandler wraps next so that ACME HTTP-01 challenges are answered before
// anything else; other requests go to next.
func (m *Manager) HTTPHandler(next http.Handler) http.Handler {
	if a, ok := m.src.(interface {
		httpHandler(http.Handler) http.Handler
	}); ok {
		return a.httpHandler(next)
	}
	return next
}

// Names returns the names configured to be served, or nil when any name is
// served (the internal CA without Domains, or names taken from the files).
func (m *Manager) Names() []string { return m.cfg.Domains }

// Ready returns nil when a valid certificate is loaded, else what is missing.
func (m *Manager) Ready(context.Context) error { return m.src.ready() }

// Run keeps certificates fresh (file watching, orders, renewals) until ctx
// is done, then releases everything it started (certmagic's cache).
func (m *Manager) Run(ctx context.Context) error { return m.src.run(ctx) }

// Reload re-reads static files now (SIGHUP). A failed reload keeps serving the
// previous certificate and returns why.
func (m *Manager) Reload(ctx context.Context) error { return m.src.reload(ctx) }

// Status lists the certificates currently served.
func (m *Manager) Status() []Status { return m.src.status() }
