package certs

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// Storage keys of the internal CA. Keys are stored 0600 by FileStorage.
const (
	caRootCertKey  = "outrider/internal-ca/root.crt"
	caRootKeyKey   = "outrider/internal-ca/root.key"
	caInterCertKey = "outrider/internal-ca/intermediate.crt"
	caInterKeyKey  = "outrider/internal-ca/intermediate.key"
	caLockName     = "outrider-internal-ca"

	caRootLifetime  = 10 * 365 * 24 * time.Hour
	caInterLifetime = 365 * 24 * time.Hour
)

// authority is the internal CA: a root kept offline in storage and an
// intermediate that signs the leaves.
type authority struct {
	root     *x509.Certificate
	rootPEM  []byte
	inter    *x509.Certificate
	interKey crypto.Signer
}

// InternalRootPEM returns the internal CA's root certificate (PEM) kept in
// the storage location, for users to trust; etcd configures the client of an
// etcd:// location. It returns [ErrNoInternalCA]
// when the CA was never created there (outrider proxy creates it).
func InternalRootPEM(ctx context.Context, storage string, etcd EtcdConfig) ([]byte, error) {
	st, err := openStorage(storage, etcd)
	if err != nil {
		return nil, err
	}
	b, err := st.Load(ctx, caRootCertKey)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w %s (start outrider proxy --tls-internal with this --storage first)", ErrNoInternalCA, storage)
	}
	if err != nil {
		return nil, fmt.Errorf("reading internal CA root: %w", err)
	}
	if _, err := parseCertPEM(b); err != nil {
		return nil, fmt.Errorf("internal CA root in %s: %w", storage, err)
	}
	return b, nil
}

// loadOrCreateCA loads the CA from storage, creating the root once and the
// intermediate when missing or in the last third of its life. A storage
// lock makes replicas sharing storage agree on one CA.
func loadOrCreateCA(ctx context.Context, st certmagic.Storage, now time.Time, log *slog.Logger) (*authority, error) {
	if err := st.Lock(ctx, caLockName); err != nil {
		return nil, fmt.Errorf("locking internal CA storage: %w", err)
	}
	defer st.Unlock(context.WithoutCancel(ctx), caLockName)

	root, rootKey, err := loadPair(ctx, st, caRootCertKey, caRootKeyKey)
	if errors.Is(err, fs.ErrNotExist) {
		root, rootKey, err = createCert(nil, nil, now, caRootLifetime, pkix.Name{
			CommonName: "outrider internal root CA", Organization: []string{"outrider"}}, true)
		if err == nil {
			err = storePair(ctx, st, caRootCertKey, caRootKeyKey, root, rootKey)
		}
		if err == nil {
			log.Info("internal CA root created", "not_after", root.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("internal CA root: %w", err)
	}
	inter, interKey, err := loadPair(ctx, st, caInterCertKey, caInterKeyKey)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("internal CA intermediate: %w", err)
	case inter.CheckSignatureFrom(root) != nil:
		log.Warn("internal CA intermediate not signed by the root; replacing it")
		inter = nil
	case now.After(renewalDue(inter.NotBefore, inter.NotAfter)):
		inter = nil
	}
	if inter == nil {
		inter, interKey, err = createCert(root, rootKey, now, caInterLifetime, pkix.Name{
			CommonName: "outrider internal intermediate CA", Organization: []string{"outrider"}}, true)
		if err == nil {
			err = storePair(ctx, st, caInterCertKey, caInterKeyKey, inter, interKey)
		}
		if err != nil {
			return nil, fmt.Errorf("internal CA intermediate: %w", err)
		}
		log.Info("internal CA intermediate created", "not_after", inter.NotAfter.UTC().Format(time.RFC3339))
	}
	return &authority{root: root, rootPEM: pemCert(root.Raw), inter: inter, interKey: interKey}, nil
}

func loadPair(ctx context.Context, st certmagic.Storage, certKey, keyKey string) (*x509.Certificate, crypto.Signer, error) {
	cb, err := st.Load(ctx, certKey)
	if err != nil {
		return nil, nil, err
	}
	kb, err := st.Load(ctx, keyKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := parseCertPEM(cb)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certKey, err)
	}
	pk, err := certmagic.PEMDecodePrivateKey(kb)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyKey, err)
	}
	return cert, pk, nil
}

func storePair(ctx context.Context, st certmagic.Storage, certKey, keyKey string, cert *x509.Certificate, key crypto.Signer) error {
	kb, err := certmagic.PEMEncodePrivateKey(key)
	if err != nil {
		return err
	}
	if err := st.Store(ctx, keyKey, kb); err != nil {
		return err
	}
	return st.Store(ctx, certKey, pemCert(cert.Raw))
}

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// createCert makes a key and a certificate signed by parent (self-signed
// when parent is nil). For a leaf, subject's CommonName is the name.
func createCert(parent *x509.Certificate, parentKey crypto.Signer, now time.Time, life time.Duration, subject pkix.Name, isCA bool) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      subject,
		// Back-dated a little for clocks slightly behind ours.
		NotBefore: now.Add(-5 * time.Minute),
		NotAfter:  now.Add(life),
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
		if parent != nil {
			tmpl.MaxPathLenZero = true
		}
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		if ip := net.ParseIP(subject.CommonName); ip != nil {
			tmpl.IPAddresses = []net.IP{ip}
		} else {
			tmpl.DNSNames = []string{subject.CommonName}
		}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	} else if tmpl.NotAfter.After(parent.NotAfter) {
		tmpl.NotAfter = parent.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// internalSource serves leaves from the internal CA. With Domains, only
// those names are served: exact names and "*.suffix" patterns get their
// leaves at start (a pattern's wildcard leaf serves every name it matches),
// anything else is refused. Without Domains a leaf is issued on demand for
// the name a client asks, within the bounds of ondemand.go. Leaves live in
// memory and are re-issued when a third of their life is left.
type internalSource struct {
	cfg      Config
	log      *slog.Logger
	storage  certmagic.Storage
	track    *tracker
	metrics  *metrics
	allowed  map[string]bool // nil: any valid name, on demand
	patterns []string        // the "*.suffix" entries of Domains
	refusals *refusalLog

	mu     sync.Mutex // guards ca, leaves, cache and limit; held while issuing (fast)
	ca     *authority
	leaves map[string]*tls.Certificate // the configured names'
	cache  *leafCache                  // on-demand names'
	limit  *issueLimiter
}

func newInternalSource(cfg Config, m *metrics) (*internalSource, error) {
	st, err := openStorage(cfg.Storage, cfg.Etcd)
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	ca, err := loadOrCreateCA(ctx, st, cfg.Now(), cfg.Logger)
	if err != nil {
		return nil, err
	}
	s := &internalSource{
		cfg: cfg, log: cfg.Logger, storage: st, ca: ca, metrics: m,
		track:    newTracker("internal", cfg, m),
		leaves:   map[string]*tls.Certificate{},
		cache:    newLeafCache(cfg.InternalMaxNames),
		limit:    newIssueLimiter(cfg.InternalIssueBurst, cfg.InternalIssueInterval),
		refusals: &refusalLog{log: cfg.Logger},
	}
	if len(cfg.Domains) > 0 {
		s.allowed = map[string]bool{}
		for _, d := range cfg.Domains {
			d = strings.ToLower(d)
			s.allowed[d] = true
			if strings.HasPrefix(d, "*.") {
				s.patterns = append(s.patterns, d)
			}
			if _, err := s.leaf(d); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

func (s *internalSource) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if name == "" {
		switch {
		case len(s.cfg.Domains) > 0:
			name = strings.ToLower(s.cfg.Domains[0])
		case hello.Conn != nil:
			// No SNI: a client connecting by IP address.
			if host, _, err := net.SplitHostPort(hello.Conn.LocalAddr().String()); err == nil {
				name = host
			}
		}
	}
	if name == "" {
		name = "localhost"
	}
	if s.allowed != nil {
		if s.allowed[name] {
			return s.leaf(name)
		}
		if p := s.pattern(name); p != "" {
			return s.leaf(p)
		}
		return nil, s.refuse(name, hello, refusedNotAllowed, "%q is not among --domain", name)
	}
	if err := checkName(name); err != nil || strings.HasPrefix(name, "*.") {
		return nil, s.refuse(name, hello, refusedInvalid, "%q is not a host name", name)
	}
	return s.onDemand(name, hello)
}

// pattern returns the "*.suffix" entry of Domains that name matches (one
// label more than the suffix), or "".
func (s *internalSource) pattern(name string) string {
	for _, p := range s.patterns {
		if label, ok := strings.CutSuffix(name, p[1:]); ok && label != "" && !strings.Contains(label, ".") {
			return p
		}
	}
	return ""
}

// refuse counts and logs a refusal and returns its error.
func (s *internalSource) refuse(name string, hello *tls.ClientHelloInfo, reason, format string, args ...any) error {
	s.metrics.internalRefusals.WithLabelValues(reason).Inc()
	s.refusals.refused(s.cfg.Now(), name, clientKey(hello), reason)
	return fmt.Errorf("%w: "+format, append([]any{ErrNameNotAllowed}, args...)...)
}

// leaf returns the current leaf for a configured name, issuing one when
// there is none or it is due for renewal.
func (s *internalSource) leaf(name string) (*tls.Certificate, error) {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.leaves[name]
	if c != nil && now.Before(renewalDue(c.Leaf.NotBefore, c.Leaf.NotAfter)) {
		return c, nil
	}
	c, err := s.issueLocked(name, now, c != nil)
	if err != nil {
		return nil, err
	}
	s.leaves[name] = c
	return c, nil
}

// onDemand returns the leaf for a name asked by a client when no Domains
// are configured: from the cache, or newly issued if the client has not
// asked for too many new names lately; the least recently served leaf
// makes room.
func (s *internalSource) onDemand(name string, hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	now := s.cfg.Now()
	s.mu.Lock()
	c := s.cache.get(name)
	if c != nil && now.Before(renewalDue(c.Leaf.NotBefore, c.Leaf.NotAfter)) {
		s.mu.Unlock()
		return c, nil
	}
	if c == nil && !s.limit.allow(clientKey(hello), now) {
		s.mu.Unlock()
		return nil, s.refuse(name, hello, refusedRateLimited, "%q: too many new names from %s", name, clientKey(hello))
	}
	defer s.mu.Unlock()
	c, err := s.issueLocked(name, now, c != nil)
	if err != nil {
		return nil, err
	}
	for _, old := range s.cache.put(name, c) {
		s.track.forget(old)
		s.log.Debug("internal CA leaf evicted", "domain", old)
	}
	return c, nil
}

// issueLocked signs a new leaf for name with the intermediate.
func (s *internalSource) issueLocked(name string, now time.Time, renewal bool) (*tls.Certificate, error) {
	s.track.attempt(name)
	leaf, key, err := createCert(s.ca.inter, s.ca.interKey, now, s.cfg.InternalLifetime, pkix.Name{CommonName: name}, false)
	if err != nil {
		err = fmt.Errorf("issuing internal certificate for %s: %w", name, err)
		s.track.failed(name, resultError, err)
		return nil, err
	}
	c := &tls.Certificate{Certificate: [][]byte{leaf.Raw, s.ca.inter.Raw}, PrivateKey: key, Leaf: leaf}
	s.track.succeeded(name, leaf)
	msg := "certificate issued"
	if renewal {
		msg = "certificate renewed"
	}
	s.log.Info(msg, "domain", name, "issuer", s.ca.inter.Subject.CommonName, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	return c, nil
}

// evictLocked drops expired on-demand leaves.
func (s *internalSource) evictLocked(now time.Time) {
	for _, n := range s.cache.removeExpired(now) {
		s.track.forget(n)
	}
}

func (s *internalSource) ready() error {
	if s.allowed == nil {
		return nil // any name is issued on demand
	}
	return s.track.readyErr()
}

func (s *internalSource) status() []Status { return s.track.status() }

func (s *internalSource) reload(ctx context.Context) error { return s.maintain(ctx) }

// maintain renews the intermediate and the configured names' leaves when
// due, and drops expired leaves of other names.
func (s *internalSource) maintain(ctx context.Context) error {
	now := s.cfg.Now()
	s.mu.Lock()
	interDue := now.After(renewalDue(s.ca.inter.NotBefore, s.ca.inter.NotAfter))
	s.mu.Unlock()
	if interDue {
		ca, err := loadOrCreateCA(ctx, s.storage, now, s.log)
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.ca = ca
		clear(s.leaves) // re-issued under the new intermediate
		s.cache.clear()
		s.mu.Unlock()
	}
	var errs []error
	for n := range s.allowed {
		if _, err := s.leaf(n); err != nil {
			errs = append(errs, err)
		}
	}
	s.mu.Lock()
	s.evictLocked(now)
	s.mu.Unlock()
	s.track.check()
	return errors.Join(errs...)
}

func (s *internalSource) run(ctx context.Context) error {
	tick := time.NewTicker(min(s.cfg.RenewCheckInterval, s.cfg.InternalLifetime/10))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := s.maintain(ctx); err != nil {
				s.log.Error("internal CA maintenance failed", "err", err)
			}
		}
	}
}
