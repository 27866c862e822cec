package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"
	"go.uber.org/zap"
)

// LetsEncryptStaging is Let's Encrypt's staging directory: real validation,
// untrusted certificates, generous rate limits.
const LetsEncryptStaging = "https://acme-staging-v02.api.letsencrypt.org/directory"

// acmeSource obtains and renews certificates for Domains through certmagic,
// with its own Cache and Config: certmagic's package defaults are never
// read for issuers nor written.
type acmeSource struct {
	cfg     Config
	log     *slog.Logger
	storage certmagic.Storage
	cache   *certmagic.Cache
	// magic orders and renews the DNS names of Domains; ipMagic, nil when
	// there are none, the IP addresses (with their own profile). Both sit
	// on the one cache, so either serves any cached certificate.
	magic, ipMagic *certmagic.Config
	// odMagic obtains on-demand names at their first handshake, as od
	// decides; both nil without OnDemandAsk.
	odMagic *certmagic.Config
	od      *onDemand
	// dnsNames and ipNames split Domains (lower case); static holds them all.
	dnsNames, ipNames []string
	static            map[string]bool
	issuers           []*certmagic.ACMEIssuer
	ledger            *ledger
	track             *tracker
	m                 *metrics
	kick              chan struct{} // asks run to refresh the served-certificate facts
	zl                *zap.Logger
	interval          time.Duration  // current check period (checkInterval)
	staleRun          map[string]int // watchdog: checks in a row storage was newer; run's goroutine only
}

func newACMESource(cfg Config, m *metrics) (*acmeSource, error) {
	storage, err := openStorage(cfg.Storage, cfg.Etcd)
	if err != nil {
		return nil, err
	}
	var roots *x509.CertPool
	if cfg.ACMECARootFile != "" {
		b, err := os.ReadFile(cfg.ACMECARootFile)
		if err != nil {
			return nil, fmt.Errorf("reading --acme-ca-root: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--acme-ca-root %s: no PEM certificate in the file", cfg.ACMECARootFile)
		}
	}
	var eab *acme.EAB
	if cfg.ACMEEABKeyID != "" {
		b, err := os.ReadFile(cfg.ACMEEABHMACFile)
		if err != nil {
			return nil, fmt.Errorf("reading --acme-eab-hmac-file: %w", err)
		}
		key := strings.TrimSpace(string(b))
		if key == "" {
			return nil, fmt.Errorf("--acme-eab-hmac-file %s is empty", cfg.ACMEEABHMACFile)
		}
		eab = &acme.EAB{KeyID: cfg.ACMEEABKeyID, MACKey: key}
	}

	s := &acmeSource{
		cfg: cfg, log: cfg.Logger, storage: storage, m: m,
		ledger:   &ledger{storage: storage, now: cfg.Now},
		track:    newTracker("acme", cfg, m),
		kick:     make(chan struct{}, 1),
		static:   map[string]bool{},
		staleRun: map[string]int{},
	}
	for _, d := range cfg.Domains {
		d = strings.ToLower(d)
		s.static[d] = true
		if certmagic.SubjectIsIP(d) {
			s.ipNames = append(s.ipNames, d)
		} else {
			s.dnsNames = append(s.dnsNames, d)
		}
	}
	zl := newZapLogger(cfg.Logger.Handler())
	s.zl = zl
	var dns01 *certmagic.DNS01Solver
	if cfg.dnsEnabled() {
		if dns01, err = newDNSSolver(cfg, zl); err != nil {
			return nil, err
		}
	}
	s.interval = cfg.RenewCheckInterval
	s.cache = certmagic.NewCache(s.cacheOptions())
	// newConfig is one certmagic.Config on the shared cache, with an issuer
	// per directory ordering with profile. With dns01 (never for IP
	// addresses, which DNS-01 cannot prove) it is the only challenge: the
	// point is a host the CA cannot reach, where an HTTP-01 or TLS-ALPN-01
	// attempt would only fail first.
	var defaultName string
	if len(cfg.Domains) > 0 {
		// Clients without SNI get the certificate of the address they
		// dialled if there is one, else the first name's.
		defaultName = cfg.Domains[0]
	}
	newConfig := func(profile string, dns01 *certmagic.DNS01Solver, od *certmagic.OnDemandConfig) *certmagic.Config {
		magic := certmagic.New(s.cache, certmagic.Config{
			Storage:            storage,
			Logger:             zl,
			OnEvent:            s.onEvent,
			RenewalWindowRatio: renewalRatio,
			DefaultServerName:  defaultName,
			OnDemand:           od,
			// Non-nil, so that certmagic.New does not add an issuer built
			// from its package defaults (Let's Encrypt).
			Issuers: []certmagic.Issuer{},
		})
		for _, dir := range cfg.ACMEDirectories {
			disableHTTP, disableALPN := cfg.DisableHTTPChallenge, cfg.DisableTLSALPNChallenge
			var solver acmez.Solver
			if dns01 != nil {
				solver, disableHTTP, disableALPN = dns01, true, true
			}
			iss := certmagic.NewACMEIssuer(magic, certmagic.ACMEIssuer{
				CA: dir,
				// certmagic retries a failed order against TestCA; left
				// empty with a private CA it could reach Let's Encrypt
				// staging.
				TestCA:                  testCA(dir),
				Email:                   cfg.ACMEEmail,
				Agreed:                  true,
				ExternalAccount:         eab,
				Profile:                 profile,
				DisableHTTPChallenge:    disableHTTP,
				DisableTLSALPNChallenge: disableALPN,
				DNS01Solver:             solver,
				AltHTTPPort:             cfg.HTTPChallengePort,
				AltTLSALPNPort:          cfg.TLSALPNChallengePort,
				TrustedRoots:            roots,
				Logger:                  zl,
			})
			s.issuers = append(s.issuers, iss)
			magic.Issuers = append(magic.Issuers, iss)
		}
		return magic
	}
	s.magic = newConfig(cfg.ACMEProfile, dns01, nil)
	if len(s.ipNames) > 0 {
		s.ipMagic = newConfig(ipProfile(cfg, s.ipNames), nil, nil)
	}
	if cfg.OnDemandAsk != "" {
		if s.od, err = newOnDemand(cfg, m); err != nil {
			return nil, err
		}
		// Customers' names point at this host: HTTP-01 and TLS-ALPN-01,
		// not DNS-01 (their zones are not ours to update).
		s.odMagic = newConfig(cfg.ACMEProfile, nil, &certmagic.OnDemandConfig{DecisionFunc: s.od.decide})
	}
	for _, d := range cfg.Domains {
		s.track.expect(strings.ToLower(d))
	}
	return s, nil
}

// cacheOptions are the certmagic cache's options. Its RenewCheckInterval
// is the period of our own checks (s.interval): certmagic reads it to
// judge what is due (ARI's renew-before cutoff, the emergency window of 5
// intervals), so it must be how often checks really happen. certmagic's own
// maintenance tick keeps the configured RenewCheckInterval.
func (s *acmeSource) cacheOptions() certmagic.CacheOptions {
	return certmagic.CacheOptions{
		GetConfigForCert:   s.configForCert,
		RenewCheckInterval: s.interval,
		Logger:             s.zl,
	}
}

// shortlivedProfile is the ACME profile under which Let's Encrypt issues
// IP-address certificates (and only under it), valid about 6 days.
const shortlivedProfile = "shortlived"

// ipProfile is the ACME profile IP-address certificates are ordered with:
// shortlived unless ACMEProfile names another, which is then respected
// with a warning. It logs the choice.
func ipProfile(cfg Config, ips []string) string {
	switch cfg.ACMEProfile {
	case "", shortlivedProfile:
		cfg.Logger.Info("IP address certificates are ordered with the shortlived ACME profile", "domains", ips, "profile", shortlivedProfile)
		return shortlivedProfile
	default:
		cfg.Logger.Warn("IP address certificates ordered with --acme-profile; Let's Encrypt issues them only under shortlived",
			"domains", ips, "profile", cfg.ACMEProfile)
		return cfg.ACMEProfile
	}
}

// configForCert is the certmagic.Config that maintains (renews) cert: the
// one for IP addresses when it names one, the on-demand one when it names
// none of Domains, else the one for DNS names.
func (s *acmeSource) configForCert(cert certmagic.Certificate) (*certmagic.Config, error) {
	static := false
	for _, n := range cert.Names {
		if certmagic.SubjectIsIP(n) && s.ipMagic != nil {
			return s.ipMagic, nil
		}
		static = static || s.static[strings.ToLower(n)]
	}
	if !static && s.odMagic != nil {
		return s.odMagic, nil
	}
	return s.magic, nil
}

// covers reports whether a server name is served by a certificate of
// Domains: the name itself, or a wildcard one label up.
func (s *acmeSource) covers(name string) bool {
	name = strings.ToLower(name)
	if s.static[name] {
		return true
	}
	_, parent, ok := strings.Cut(name, ".")
	return ok && s.static["*."+parent]
}

// testCA is the directory certmagic retries against after a failure: Let's
// Encrypt's staging for its production, else the directory itself, so that
// nothing ever falls back to a public CA.
func testCA(dir string) string {
	if dir == LetsEncryptProduction {
		return LetsEncryptStaging
	}
	return dir
}

func (s *acmeSource) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	// Only a name outside Domains may be obtained on demand; the configs
	// share one cache, so either serves any certificate already in it.
	if s.odMagic != nil && hello.ServerName != "" && !s.covers(hello.ServerName) {
		return s.odMagic.GetCertificate(hello)
	}
	return s.magic.GetCertificate(hello)
}

func (s *acmeSource) nextProtos() []string {
	if s.cfg.DisableTLSALPNChallenge {
		return nil
	}
	return []string{acmeTLS1Protocol}
}

// acmeTLS1Protocol is the ALPN protocol of the TLS-ALPN-01 challenge
// (RFC 8737).
const acmeTLS1Protocol = "acme-tls/1"

func (s *acmeSource) httpHandler(next http.Handler) http.Handler {
	h := next
	for i := len(s.issuers) - 1; i >= 0; i-- {
		h = s.issuers[i].HTTPChallengeHandler(h)
	}
	return h
}

func (s *acmeSource) ready() error { return s.track.readyErr() }

func (s *acmeSource) status() []Status { return s.track.status() }

// reload refreshes the facts shown on /status and /metrics; certificates
// themselves are renewed by the maintenance loop, not by SIGHUP.
func (s *acmeSource) reload(context.Context) error {
	s.refresh()
	return nil
}

// run starts certificate management in the background (a stored valid
// certificate is served at once; a missing one is ordered with certmagic's
// retries) and keeps the facts fresh until ctx is done.
func (s *acmeSource) run(ctx context.Context) error {
	defer s.cache.Stop()
	if err := s.magic.ManageAsync(ctx, s.dnsNames); err != nil {
		return fmt.Errorf("managing certificates: %w", err)
	}
	if s.ipMagic != nil {
		if err := s.ipMagic.ManageAsync(ctx, s.ipNames); err != nil {
			return fmt.Errorf("managing IP address certificates: %w", err)
		}
	}
	timer := time.NewTimer(s.retune(s.refresh()))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
			// A new certificate may be shorter-lived: check on its
			// schedule from now on.
			timer.Reset(s.retune(s.refresh()))
		case <-timer.C:
			shortest := s.refresh()
			s.watch(ctx)
			// Renewals on our schedule, set by each certificate's
			// lifetime, besides certmagic's every RenewCheckInterval. It
			// renews only what is due (its renewal window, or ARI's), and
			// its back-off paces retries of failed renewals.
			if err := s.cache.RenewManagedCertificates(ctx); err != nil {
				s.log.Warn("checking certificates for renewal", "err", err)
			}
			timer.Reset(s.retune(shortest))
		}
	}
}

// retune sets the check period from the shortest certificate lifetime
// served and returns it.
func (s *acmeSource) retune(shortest time.Duration) time.Duration {
	d := checkInterval(s.cfg.RenewCheckInterval, shortest)
	if d != s.interval {
		s.interval = d
		s.cache.SetOptions(s.cacheOptions())
		s.log.Debug("certificate check period set", "period_seconds", d.Seconds(), "shortest_lifetime_seconds", shortest.Seconds())
	}
	return d
}

// refresh reads the certificates certmagic serves from its cache and
// returns the shortest lifetime among them (0 when none).
func (s *acmeSource) refresh() time.Duration {
	var shortest time.Duration
	names := s.cfg.Domains
	if s.od != nil {
		names = append(slices.Clip(names), s.od.allNames()...)
	}
	for _, name := range names {
		name = strings.ToLower(name)
		var best *x509.Certificate
		for _, c := range s.cache.AllMatchingCertificates(name) {
			if c.Leaf != nil && (best == nil || c.Leaf.NotAfter.After(best.NotAfter)) {
				best = c.Leaf
			}
		}
		if best != nil {
			s.track.served(name, best)
			if life := best.NotAfter.Sub(best.NotBefore); shortest == 0 || life < shortest {
				shortest = life
			}
		}
	}
	s.track.check()
	return shortest
}

func (s *acmeSource) refreshSoon() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// onEvent follows certmagic's certificate lifecycle for metrics, /status
// and logs, and enforces the duplicate-certificate guard: an error returned
// for cert_obtaining aborts the order.
func (s *acmeSource) onEvent(ctx context.Context, event string, data map[string]any) error {
	name, _ := data["identifier"].(string)
	renewal, _ := data["renewal"].(bool)
	switch event {
	case "cert_obtaining":
		onDemand := s.od != nil && s.od.knows(name) && !s.static[name]
		if onDemand {
			s.track.optional(name)
		}
		s.track.attempt(name)
		if onDemand && !renewal {
			if err := s.od.allowOrder(name); err != nil {
				s.m.refused.WithLabelValues(refusedOnDemandRate).Inc()
				s.track.failed(name, resultRefused, err)
				s.log.Warn("on-demand certificate order refused", "domain", name, "err", err)
				return certmagic.ErrNoRetry{Err: err}
			}
		}
		if renewal {
			issuerKey, _ := data["issuer"].(string)
			if err := s.ariGuard(ctx, name, issuerKey); err != nil {
				s.m.refused.WithLabelValues(refusedStaleARI).Inc()
				s.track.failed(name, resultRefused, err)
				s.log.Warn("renewal refused: stale ARI window", "domain", name, "err", err)
				return certmagic.ErrNoRetry{Err: err}
			}
		}
		if err := s.guard(ctx, name); err != nil {
			s.m.refused.WithLabelValues(refusedDuplicate).Inc()
			s.track.failed(name, resultRefused, err)
			s.log.Error("certificate order refused", "domain", name, "err", err)
			return certmagic.ErrNoRetry{Err: err}
		}
	case "cert_obtained":
		issuer, _ := data["issuer"].(string)
		n, err := s.ledger.record(ctx, []string{name})
		if err != nil {
			s.log.Warn("recording obtained certificate in the order ledger", "domain", name, "err", err)
		} else {
			s.m.ledgerOrders.WithLabelValues(name).Set(float64(n))
		}
		var leaf *x509.Certificate
		if p, ok := data["certificate_path"].(string); ok {
			leaf, _ = loadLeaf(ctx, s.storage, p)
		}
		s.track.succeeded(name, leaf)
		msg := "certificate obtained"
		if renewal {
			msg = "certificate renewed"
		}
		attrs := []any{"domain", name, "issuer", issuer}
		if leaf != nil {
			attrs = append(attrs, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		s.log.Info(msg, attrs...)
		s.refreshSoon()
	case "cert_failed":
		err, _ := data["error"].(error)
		if err == nil {
			err = errors.New("unknown error")
		}
		s.track.failed(name, resultError, err)
		s.log.Warn("certificate order failed; certmagic retries with backoff", "domain", name, "renewal", renewal, "err", err)
	case "cached_managed_cert":
		s.refreshSoon()
	}
	return nil
}

// guard refuses an order for name when the ledger holds DuplicateLimit or
// more certificates for it in the last 7 days, unless ForceOrder.
func (s *acmeSource) guard(ctx context.Context, name string) error {
	if s.cfg.DuplicateLimit < 0 {
		return nil
	}
	issued, err := s.ledger.recent(ctx, []string{name})
	if err != nil {
		// The guard protects against a CA's limits; an unreadable ledger must
		// not stop certificates from being obtained.
		s.log.Warn("order ledger unreadable; not enforcing the duplicate limit", "domain", name, "err", err)
		return nil
	}
	s.m.ledgerOrders.WithLabelValues(name).Set(float64(len(issued)))
	if len(issued) < s.cfg.DuplicateLimit {
		return nil
	}
	if s.cfg.ForceOrder {
		s.log.Warn("ordering beyond the duplicate certificate limit because forced", "domain", name,
			"recent_orders", len(issued), "limit", s.cfg.DuplicateLimit)
		return nil
	}
	next := issued[len(issued)-s.cfg.DuplicateLimit].Add(ledgerWindow)
	return fmt.Errorf("%w: %d certificates for %s obtained in the last 7 days (limit %d); next order allowed after %s, or pass --acme-force-order",
		ErrDuplicateLimit, len(issued), name, s.cfg.DuplicateLimit, next.UTC().Format(time.RFC3339))
}

// loadLeaf reads a PEM certificate chain from storage and returns its first
// certificate.
func loadLeaf(ctx context.Context, st certmagic.Storage, key string) (*x509.Certificate, error) {
	b, err := st.Load(ctx, key)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM certificate", key)
	}
	return x509.ParseCertificate(blk.Bytes)
}
