package certs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outrider-dev/outrider/internal/dirwatch"
	"golang.org/x/sync/errgroup"
)

// staticSource serves one certificate from PEM files and swaps it when the
// files change. A broken replacement keeps the last good certificate. Its
// names are kept by the same tracker as ACME and internal certificates, so
// expiry, renewal due, degraded and issuer read the same on /status and
// /metrics whatever the source.
type staticSource struct {
	certFile, keyFile string
	interval          time.Duration
	log               *slog.Logger
	metrics           *metrics
	track             *tracker
	now               func() time.Time
	ocsp              *stapler

	cert atomic.Pointer[tls.Certificate] // as loaded; handshakes get it through ocsp.get

	mu      sync.Mutex // serializes loads; guards sum, names and lastErr
	sum     [32]byte   // hash of the loaded cert and key bytes
	names   []string   // names of the loaded certificate, as tracked
	lastErr error
}

func newStaticSource(cfg Config, m *metrics) (*staticSource, error) {
	s := &staticSource{
		certFile: cfg.CertFile, keyFile: cfg.KeyFile,
		interval: cfg.CheckInterval,
		log:      cfg.Logger, metrics: m, now: cfg.Now,
		track: newTracker("file", cfg, m),
	}
	s.ocsp = newStapler(cfg, m, s.track)
	if _, err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *staticSource) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := s.cert.Load()
	if c == nil {
		return nil, ErrNoCertificate
	}
	return s.ocsp.get(c), nil
}

// load reads both files and swaps the certificate if their content changed.
// It reports whether a new certificate was installed.
func (s *staticSource) load() (changed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	certPEM, err := os.ReadFile(s.certFile)
	if err != nil {
		return false, s.fail(fmt.Errorf("reading certificate file: %w", err))
	}
	keyPEM, err := os.ReadFile(s.keyFile)
	if err != nil {
		return false, s.fail(fmt.Errorf("reading key file: %w", err))
	}
	sum := sha256.Sum256(append(append(bytes.Clone(certPEM), 0), keyPEM...))
	if sum == s.sum && s.cert.Load() != nil {
		return false, nil
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return false, s.fail(fmt.Errorf("loading %s and %s: %w", s.certFile, s.keyFile, err))
	}
	leaf := cert.Leaf // filled by X509KeyPair since Go 1.23
	if leaf == nil {
		return false, s.fail(fmt.Errorf("loading %s: no certificate", s.certFile))
	}
	s.sum, s.lastErr = sum, nil
	s.cert.Store(&cert)
	s.metrics.reloads.WithLabelValues("success").Inc()
	names := certNames(leaf.DNSNames, leaf.IPAddresses, leaf.Subject.CommonName)
	for _, n := range s.names {
		if !slices.Contains(names, n) {
			s.track.forget(n) // the new file no longer covers it
		}
	}
	s.names = names
	for _, n := range names {
		s.track.served(n, leaf)
	}
	s.ocsp.set(s.certFile, &cert, names)
	attrs := []any{"file", s.certFile, "names", names, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339)}
	if s.now().After(leaf.NotAfter) {
		s.log.Warn("certificate loaded but already expired", attrs...)
	} else {
		s.log.Info("certificate loaded", attrs...)
	}
	s.track.check() // after the load line: a warning for it follows it
	return true, nil
}

func (s *staticSource) fail(err error) error {
	s.lastErr = err
	s.metrics.reloads.WithLabelValues("error").Inc()
	return err
}

func (s *staticSource) reload(context.Context) error {
	_, err := s.load()
	if err != nil && s.cert.Load() != nil {
		s.log.Warn("certificate reload failed; keeping the previous certificate", "file", s.certFile, "err", err)
	}
	return err
}

func (s *staticSource) ready() error {
	if s.cert.Load() == nil {
		return ErrNoCertificate
	}
	return s.track.readyErr()
}

// status lists the certificate's names as the tracker knows them, with the
// last failed reload, if any, as their error.
func (s *staticSource) status() []Status {
	s.mu.Lock()
	lastErr := s.lastErr
	s.mu.Unlock()
	out := s.track.status()
	if lastErr != nil {
		for i := range out {
			out[i].LastError = lastErr.Error()
		}
	}
	return out
}

// run watches the directories holding the files, because editors, cp and the
// kubelet replace files by rename or symlink swap, which a watch on the file
// itself would miss. A timer re-checks in case events are lost. Beside it
// the stapler keeps an OCSP response stapled when the certificate names a
// responder.
func (s *staticSource) run(ctx context.Context) error {
	dirs := []string{filepath.Dir(s.certFile)}
	if d := filepath.Dir(s.keyFile); d != dirs[0] {
		dirs = append(dirs, d)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.ocsp.run(ctx) })
	g.Go(func() error {
		return dirwatch.Run(ctx, dirwatch.Config{
			Dirs: dirs, Debounce: 100 * time.Millisecond, Interval: s.interval, Logger: s.log,
		}, s.reloadQuiet)
	})
	return g.Wait()
}

// reloadQuiet reloads and logs only failures; a half-written pair seen in
// the middle of an update is retried by the next event or tick.
func (s *staticSource) reloadQuiet(ctx context.Context) {
	if err := s.reload(ctx); err != nil && s.cert.Load() == nil {
		s.log.Error("certificate load failed", "file", s.certFile, "err", err)
	}
	s.track.check() // an unchanged file still comes closer to its expiry
}
