package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3/acme"
)

// The watchdog checks, every check interval, what a handshake for each
// name gets right now against the newest certificate in storage, so that a
// renewal that stalls, or a renewed certificate that was never loaded,
// shows on /readyz, /status, /metrics and in the log before a client sees
// an expired leaf.

// Check cadence. A check runs at least every maxCheckInterval (and never
// less often than RenewCheckInterval asks), and for short-lived
// certificates every lifetime/checksPerLifetime, but not more often than
// minCheckInterval.
const (
	maxCheckInterval  = time.Minute
	minCheckInterval  = time.Second
	checksPerLifetime = 20
)

// servedLastFraction is the end part of a lifetime in which a served
// certificate is reported: renewal starts at the last third, so a leaf
// still served in its last tenth means renewals are failing.
const servedLastFraction = 0.1

// staleChecks is how many checks in a row must find storage newer than
// the served leaf before it counts as a missed reload (a renewal stores
// its certificate a moment before it is loaded).
const staleChecks = 2

// checkInterval is the period of the source's maintenance checks, derived
// from the shortest lifetime among the certificates served, so that each
// certificate is checked (and renewed) on a schedule set by its own
// lifetime, not only every RenewCheckInterval.
func checkInterval(renewCheck, shortestLife time.Duration) time.Duration {
	d := min(renewCheck, maxCheckInterval)
	if shortestLife > 0 {
		d = min(d, shortestLife/checksPerLifetime)
	}
	return max(d, minCheckInterval)
}

// servedProblem says what is wrong with serving leaf (nil: nothing served)
// when storage's newest is stored (nil: none) and the mismatch has been
// seen staleRun checks in a row; "" when nothing is.
func servedProblem(now time.Time, leaf, stored *x509.Certificate, staleRun int) string {
	if leaf == nil {
		return "" // readiness already reports a missing certificate
	}
	exp := leaf.NotAfter.UTC().Format(time.RFC3339)
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	switch {
	case now.After(leaf.NotAfter):
		return "serving an expired certificate (expired at " + exp + ")"
	case stored != nil && storedIsNewer(leaf, stored) && staleRun >= staleChecks:
		return fmt.Sprintf("serving a certificate older than the one in storage (served expires %s, stored expires %s): the renewed certificate was not loaded",
			exp, stored.NotAfter.UTC().Format(time.RFC3339))
	case leaf.NotAfter.Sub(now) < time.Duration(float64(life)*servedLastFraction):
		return "serving a certificate in the last tenth of its lifetime (expires at " + exp + "): renewals are not succeeding"
	}
	return ""
}

// storedIsNewer reports whether storage holds a certificate outliving the
// served one (NotBefore is no guide: CAs backdate it).
func storedIsNewer(served, stored *x509.Certificate) bool {
	return stored.NotAfter.After(served.NotAfter)
}

// watchNames are the names the watchdog probes: Domains, and on-demand
// names that have a certificate.
func (s *acmeSource) watchNames() []string {
	names := make([]string, 0, len(s.static))
	for _, d := range s.cfg.Domains {
		names = append(names, strings.ToLower(d))
	}
	if s.od != nil {
		names = append(names, s.od.allNames()...)
	}
	return names
}

// watch runs one watchdog check over every name.
func (s *acmeSource) watch(ctx context.Context) {
	now := s.cfg.Now()
	for _, name := range s.watchNames() {
		leaf := s.probe(name)
		stored := s.newestStored(ctx, name)
		run := 0
		if leaf != nil && stored != nil && storedIsNewer(leaf, stored) {
			run = s.staleRun[name] + 1
			if s.loadNewer(ctx, name, leaf) {
				// Another replica renewed it: serve that one now, as
				// certmagic would only at this certificate's own renewal.
				leaf, run = s.probe(name), 0
			}
		}
		s.staleRun[name] = run
		problem := servedProblem(now, leaf, stored, run)
		s.track.watched(name, leaf, stored, problem)
		if problem != "" {
			// Every check, until fixed: this is the last line of defence
			// before clients see an expired certificate.
			s.log.Warn("served certificate needs attention", "domain", name, "reason", problem)
		}
	}
}

// loadNewer loads name's certificate from storage into the cache in place
// of served, and reports whether a newer one is now in it.
func (s *acmeSource) loadNewer(ctx context.Context, name string, served *x509.Certificate) bool {
	cfg := s.magic
	if certmagic.SubjectIsIP(name) && s.ipMagic != nil {
		cfg = s.ipMagic
	} else if !s.static[name] && s.odMagic != nil {
		cfg = s.odMagic
	}
	loaded, err := cfg.CacheManagedCertificate(ctx, name)
	if err != nil {
		s.log.Warn("a newer certificate in storage could not be loaded", "domain", name, "err", err)
		return false
	}
	if loaded.Leaf == nil || !loaded.Leaf.NotAfter.After(served.NotAfter) {
		return false
	}
	// The cache keeps both; handshakes would still pick the older one.
	var older []string
	for _, c := range s.cache.AllMatchingCertificates(name) {
		if c.Hash() != loaded.Hash() && slices.Contains(c.Names, name) && c.Leaf != nil && c.Leaf.NotAfter.Before(loaded.Leaf.NotAfter) {
			older = append(older, c.Hash())
		}
	}
	s.cache.Remove(older)
	s.log.Info("loaded a newer certificate found in storage", "domain", name,
		"not_after", loaded.Leaf.NotAfter.UTC().Format(time.RFC3339))
	return true
}

// probe returns the leaf a handshake for name gets now, through the same
// certificate selection as real handshakes (certmagic's, on the shared
// cache), or nil. It never obtains anything: the config probed has no
// on-demand decision.
func (s *acmeSource) probe(name string) *x509.Certificate {
	hello := &tls.ClientHelloInfo{ServerName: name, Conn: probeConn{local: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}}
	switch {
	case certmagic.SubjectIsIP(name):
		// Clients by address send no SNI; the address dialled selects.
		hello.ServerName = ""
		hello.Conn = probeConn{local: &net.TCPAddr{IP: net.ParseIP(name)}}
	case strings.HasPrefix(name, "*."):
		hello.ServerName = "outrider-watchdog" + name[1:]
	}
	c, err := s.magic.GetCertificate(hello)
	if err != nil || c == nil || c.Leaf == nil {
		return nil
	}
	// A name without a certificate of its own gets the default name's;
	// that is "none yet" (readiness reports it), not this name's leaf.
	host := hello.ServerName
	if host == "" {
		host = name
	}
	if c.Leaf.VerifyHostname(host) != nil {
		return nil
	}
	return c.Leaf
}

// probeConn gives certmagic's handshake path the addresses it reads; no
// other method is ever called on it.
type probeConn struct {
	net.Conn
	local net.Addr
}

func (c probeConn) LocalAddr() net.Addr  { return c.local }
func (c probeConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// newestStored returns the certificate for name in storage that expires
// last, across every issuer's directory, or nil.
func (s *acmeSource) newestStored(ctx context.Context, name string) *x509.Certificate {
	var best *x509.Certificate
	for _, key := range s.issuerKeys() {
		leaf, err := loadLeaf(ctx, s.storage, certmagic.StorageKeys.SiteCert(key, name))
		if err == nil && (best == nil || leaf.NotAfter.After(best.NotAfter)) {
			best = leaf
		}
	}
	return best
}

func (s *acmeSource) issuerKeys() []string {
	var keys []string
	for _, iss := range s.issuers {
		if k := iss.IssuerKey(); !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	return keys
}

// errStaleARI refuses a renewal driven by an ARI window that began before
// the current certificate was issued.
var errStaleARI = errors.New("ARI window predates the certificate")

// ariGuard refuses a renewal of name (issued by issuerKey) when the ARI
// window stored for the current certificate started before that
// certificate was issued: such a window belongs to an earlier certificate
// or is stale, and following it re-orders in a loop (cert-manager hit the
// rate limit with 5 certificates in 10 s this way). A certificate in its
// own renewal window (the last third of its lifetime) is always renewed.
func (s *acmeSource) ariGuard(ctx context.Context, name, issuerKey string) error {
	if issuerKey == "" {
		return nil
	}
	leaf, err := loadLeaf(ctx, s.storage, certmagic.StorageKeys.SiteCert(issuerKey, name))
	if err != nil {
		return nil // nothing to compare with: not ours to block
	}
	ari, err := s.storedARI(ctx, name, issuerKey)
	if err != nil || ari == nil {
		return nil
	}
	return staleARI(s.cfg.Now(), leaf, ari)
}

// staleARI is ariGuard's decision.
func staleARI(now time.Time, leaf *x509.Certificate, ari *acme.RenewalInfo) error {
	start := ari.SuggestedWindow.Start
	if start.IsZero() || !start.Before(leaf.NotBefore) {
		return nil
	}
	due := renewalDue(leaf.NotBefore, leaf.NotAfter)
	if !now.Before(due) {
		return nil // due by its own lifetime, whatever ARI says
	}
	return fmt.Errorf("%w: window starts %s, certificate issued %s; not ordering again before its own renewal window at %s",
		errStaleARI, start.UTC().Format(time.RFC3339), leaf.NotBefore.UTC().Format(time.RFC3339), due.UTC().Format(time.RFC3339))
}

// storedARI reads the ACME renewal info certmagic keeps beside a
// certificate in storage.
func (s *acmeSource) storedARI(ctx context.Context, name, issuerKey string) (*acme.RenewalInfo, error) {
	b, err := s.storage.Load(ctx, certmagic.StorageKeys.SiteMeta(issuerKey, name))
	if err != nil {
		return nil, err
	}
	var res certmagic.CertificateResource
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, err
	}
	if len(res.IssuerData) == 0 {
		return nil, nil
	}
	var ac acme.Certificate
	if err := json.Unmarshal(res.IssuerData, &ac); err != nil {
		return nil, err
	}
	return ac.RenewalInfo, nil
}
