package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
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

	// DNSProvider turns on the DNS-01 challenge, the only one for wildcard
	// names and the one that works where the CA cannot reach the host:
	// DNSProviderRFC2136 (with DNSServer and DNSTSIGKeyFile) or
	// DNSProviderExecPrefix+"/path/cmd". With it, DNS names are validated
	// by DNS-01 only (HTTP-01 and TLS-ALPN-01 are off for them); IP
	// addresses, which DNS-01 cannot prove, keep the other two. If empty,
	// no DNS-01.
	DNSProvider string
	// DNSServer is the rfc2136 provider's primary server, HOST or HOST:PORT
	// (port 53 if none); DNSTSIGKeyFile its TSIG key, a BIND key file
	// (key "name" { algorithm hmac-sha256; secret "…"; };), read at New.
	DNSServer, DNSTSIGKeyFile string
	// DNSResolvers are the servers (HOST or HOST:PORT) asked to find the
	// zone of a name and to check that the TXT record has propagated. If
	// empty, the system resolvers find the zone and the zone's
	// authoritative servers are checked.
	DNSResolvers []string
	// DNSPropagationTimeout is how long the propagation check waits for the
	// TXT record to be visible before the CA is asked to validate. If zero,
	// two minutes; negative: no check.
	DNSPropagationTimeout time.Duration

	// OnDemandAsk turns on on-demand certificates: a name not among Domains
	// gets one at its first TLS handshake when GET OnDemandAsk?domain=NAME
	// answers 2xx within 10 s (anything else, or no answer, refuses). It
	// needs ACME (no CertFile, not Internal); Domains may then be empty.
	// On-demand names are validated by HTTP-01 or TLS-ALPN-01, and never
	// make the Manager unready. If empty, nothing is obtained on demand.
	OnDemandAsk string
	// OnDemandMaxNames caps how many names get on-demand certificates (a
	// refused name costs nothing); beyond it new names are refused with
	// [ErrOnDemandCap]. If zero, 1000.
	OnDemandMaxNames int
	// OnDemandRate is how many new on-demand orders may start in any
	// minute; beyond it an order is refused with [ErrOnDemandRate] (the
	// handshake fails; the next one tries again). If zero, 10.
	OnDemandRate int

	// ECHPublicName turns on Encrypted Client Hello: clients that have the
	// ECHConfigList (from an HTTPS DNS record) send the real server name
	// encrypted, with this public name in the clear. The public name is
	// added to Domains (ACME, internal CA with Domains) since clients whose
	// ECH is rejected verify the retry against it; with CertFile the file
	// must cover it. Keys are kept in Storage. If empty, no ECH.
	ECHPublicName string
	// ECHRotateInterval is how long an ECH key is the published one before
	// a new key replaces it; ECHGrace how long a replaced key is still
	// accepted (cover the HTTPS record's TTL and the time to publish). If
	// zero, 30 days and 7 days.
	ECHRotateInterval, ECHGrace time.Duration

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

	// RenewCheckInterval is the longest time between checks of ACME
	// certificates for renewal (expiry and ARI windows); they are also
	// checked every twentieth of the shortest lifetime served (at least
	// every second, at most every minute), so that each is renewed on its
	// own schedule. It is also how often the internal CA's leaves are
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

	// OCSPRefreshInterval is the longest time an OCSP response stapled to
	// a static certificate is used before a fresh one is fetched; it is
	// refreshed half-way between its thisUpdate and nextUpdate when that
	// comes first, and a failed fetch is retried after a minute, doubling
	// up to an hour but never more than this. A shorter interval makes a
	// revocation show in the staple sooner. If zero, half-way only.
	// Certificates without an OCSP responder URL are not affected.
	OCSPRefreshInterval time.Duration

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
	if c.ECHRotateInterval == 0 {
		c.ECHRotateInterval = 30 * 24 * time.Hour
	}
	if c.ECHGrace == 0 {
		c.ECHGrace = 7 * 24 * time.Hour
	}
	if c.ECHPublicName != "" && c.CertFile == "" && len(c.Domains) > 0 &&
		!slices.ContainsFunc(c.Domains, func(d string) bool { return strings.EqualFold(d, c.ECHPublicName) }) {
		c.Domains = append(slices.Clip(c.Domains), c.ECHPublicName)
	}
	if c.OnDemandMaxNames == 0 {
		c.OnDemandMaxNames = 1000
	}
	if c.OnDemandRate == 0 {
		c.OnDemandRate = 10
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
		"internal issue interval": c.InternalIssueInterval, "OCSP refresh interval": c.OCSPRefreshInterval} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %v is negative", name, d))
		}
	}
	acme := c.CertFile == "" && !c.Internal && (len(c.Domains) > 0 || c.OnDemandAsk != "")
	if c.InternalMaxNames < 0 || c.InternalIssueBurst < 0 {
		errs = append(errs, fmt.Errorf("internal CA bounds (%d names, burst %d) must not be negative", c.InternalMaxNames, c.InternalIssueBurst))
	}
	for _, d := range c.Domains {
		if err := checkName(d); err != nil {
			errs = append(errs, fmt.Errorf("--domain %q: %w", d, err))
		} else if acme && strings.HasPrefix(d, "*.") && !c.dnsEnabled() {
			errs = append(errs, fmt.Errorf("--domain %q: a wildcard is validated only by DNS-01; give --acme-dns", d))
		}
	}
	errs = append(errs, c.validateDNS()...)
	errs = append(errs, c.validateOnDemand()...)
	errs = append(errs, c.validateECH()...)
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
	// ServedNotAfter is the expiry of the leaf a handshake for the name
	// got at the watchdog's last check, and StoredNotAfter that of the
	// newest certificate in storage (ACME only; zero when unknown). A
	// served leaf expired, in its last tenth of life, or older than
	// storage's sets Warning and makes the Manager unready.
	ServedNotAfter time.Time `json:"served_not_after,omitzero"`
	StoredNotAfter time.Time `json:"stored_not_after,omitzero"`
	// OCSP is the stapling state of a static certificate that names an
	// OCSP responder; nil for any other. A revoked certificate, or a
	// must-staple one without a fresh response, sets Warning.
	OCSP *OCSPStatus `json:"ocsp,omitempty"`
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
	ech     *echKeys // nil without ECHPublicName
}

// New validates cfg and prepares the source: static files when CertFile is
// set, the internal CA when Internal is set or neither Domains nor
// OnDemandAsk is given, else ACME. It loads static files and the internal CA at once, so that a bad
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
	case cfg.Internal || len(cfg.Domains) == 0 && cfg.OnDemandAsk == "":
		m.src, err = newInternalSource(cfg, m.metrics)
	default:
		m.src, err = newACMESource(cfg, m.metrics)
	}
	if err != nil {
		return nil, err
	}
	if cfg.ECHPublicName != "" {
		if m.ech, err = newECHKeys(cfg); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// ECHKeys returns the function for tls.Config.GetEncryptedClientHelloKeys:
// the current ECH key and those still in their grace period. It returns
// nil when ECH is off. Until Run has loaded the keys it offers none, and
// ECH is rejected (the handshake goes on without it).
func (m *Manager) ECHKeys() func(*tls.ClientHelloInfo) ([]tls.EncryptedClientHelloKey, error) {
	if m.ech == nil {
		return nil
	}
	return m.ech.getKeys
}

// ECHConfigList returns the ECHConfigList clients need (for an HTTPS DNS
// record's ech= parameter, base64-encoded there), or nil when ECH is off
// or its keys are not loaded yet.
func (m *Manager) ECHConfigList() []byte {
	if m.ech == nil {
		return nil
	}
	return m.ech.configList()
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
// served (the internal CA without Domains, names taken from the files, or
// on-demand names).
func (m *Manager) Names() []string {
	if m.cfg.OnDemandAsk != "" {
		return nil
	}
	return m.cfg.Domains
}

// Ready returns nil when a valid certificate is loaded, else what is missing.
func (m *Manager) Ready(context.Context) error { return m.src.ready() }

// Run keeps certificates fresh (file watching, orders, renewals) and ECH
// keys rotated until ctx is done, then releases everything it started
// (certmagic's cache). With ECH, it first loads (or creates) the keys and
// returns an error when storage cannot be read.
func (m *Manager) Run(ctx context.Context) error {
	if m.ech == nil {
		return m.src.run(ctx)
	}
	if err := m.ech.maintain(ctx); err != nil {
		return fmt.Errorf("loading ECH keys: %w", err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return m.ech.run(ctx) })
	g.Go(func() error { return m.src.run(ctx) })
	return g.Wait()
}

// Reload re-reads static files now (SIGHUP). A failed reload keeps serving the
// previous certificate and returns why.
func (m *Manager) Reload(ctx context.Context) error { return m.src.reload(ctx) }

// Status lists the certificates currently served.
func (m *Manager) Status() []Status { return m.src.status() }
