package certs

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// failingAfter is how many failed attempts in a row make a certificate
// degraded (metric, warning log, /status warning).
const failingAfter = 3

// renewalRatio is the part of a certificate's lifetime, at its end, in
// which it is renewed (certmagic's default, also used by the internal CA).
const renewalRatio = 1.0 / 3

// tracker keeps the facts shown on /metrics and /status for the
// certificates of one source, by name. It is safe for concurrent use.
type tracker struct {
	source     string
	m          *metrics
	log        *slog.Logger
	now        func() time.Time
	warnBefore time.Duration

	mu    sync.Mutex
	certs map[string]*certState
}

type certState struct {
	issuer              string
	notBefore, notAfter time.Time
	lastAttempt         time.Time
	lastResult          string
	lastErr             string
	failures            int
	warning             string // current degraded reason, "" when fine
	optional            bool   // an on-demand name: never makes the source unready
	// The watchdog's last look: what a handshake got, the newest in
	// storage, and what is wrong with serving it ("" when nothing).
	servedNotAfter, storedNotAfter time.Time
	servedProblem                  string
	// OCSP stapling of a static certificate that names a responder (nil
	// otherwise), and what is wrong with it ("" when nothing).
	ocsp        *OCSPStatus
	ocspProblem string
}

func newTracker(source string, cfg Config, m *metrics) *tracker {
	return &tracker{source: source, m: m, log: cfg.Logger, now: cfg.Now,
		warnBefore: cfg.ExpiryWarning, certs: map[string]*certState{}}
}

func (t *tracker) get(name string) *certState {
	st := t.certs[name]
	if st == nil {
		st = &certState{}
		t.certs[name] = st
	}
	return st
}

// expect registers a name that should have a certificate, so that a missing
// one shows on /status and as degraded.
func (t *tracker) expect(name string) {
	t.mu.Lock()
	t.get(name)
	t.mu.Unlock()
	t.check()
}

// optional marks name as one whose certificate is not required for
// readiness (an on-demand name: one customer's failing name must not take
// the proxy out of service).
func (t *tracker) optional(name string) {
	t.mu.Lock()
	t.get(name).optional = true
	t.mu.Unlock()
}

// attempt records the start of an order or renewal.
func (t *tracker) attempt(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	t.get(name).lastAttempt = now
	t.m.lastAttempt.WithLabelValues(name).Set(float64(now.Unix()))
}

// succeeded records a successful order or renewal; leaf may be nil when the
// new certificate is reported separately through served.
func (t *tracker) succeeded(name string, leaf *x509.Certificate) {
	t.mu.Lock()
	st := t.get(name)
	if st.lastAttempt.IsZero() {
		st.lastAttempt = t.now()
		t.m.lastAttempt.WithLabelValues(name).Set(float64(st.lastAttempt.Unix()))
	}
	st.lastResult, st.lastErr, st.failures = resultSuccess, "", 0
	t.m.renewals.WithLabelValues(resultSuccess).Inc()
	t.m.lastSuccess.WithLabelValues(name).Set(1)
	t.m.failures.WithLabelValues(name).Set(0)
	t.mu.Unlock()
	if leaf != nil {
		t.served(name, leaf)
	}
	t.check()
}

// failed records a failed (resultError) or refused (resultRefused) attempt.
func (t *tracker) failed(name, result string, err error) {
	t.mu.Lock()
	st := t.get(name)
	if st.lastAttempt.IsZero() {
		st.lastAttempt = t.now()
		t.m.lastAttempt.WithLabelValues(name).Set(float64(st.lastAttempt.Unix()))
	}
	st.lastResult, st.lastErr = result, err.Error()
	st.failures++
	t.m.renewals.WithLabelValues(result).Inc()
	t.m.lastSuccess.WithLabelValues(name).Set(0)
	t.m.failures.WithLabelValues(name).Set(float64(st.failures))
	t.mu.Unlock()
	t.check()
}

// served records the certificate currently served for name.
func (t *tracker) served(name string, leaf *x509.Certificate) {
	t.mu.Lock()
	st := t.get(name)
	changed := !st.notAfter.Equal(leaf.NotAfter) || !st.notBefore.Equal(leaf.NotBefore)
	st.notBefore, st.notAfter = leaf.NotBefore, leaf.NotAfter
	issuer := leaf.Issuer.CommonName
	if issuer == "" {
		issuer = leaf.Issuer.String()
	}
	if issuer != st.issuer {
		t.m.info.DeletePartialMatch(prometheus.Labels{"domain": name})
		st.issuer = issuer
	}
	t.m.info.WithLabelValues(name, t.source, issuer).Set(1)
	t.m.expiry.WithLabelValues(name).Set(float64(leaf.NotAfter.Unix()))
	t.m.renewalDue.WithLabelValues(name).Set(float64(renewalDue(leaf.NotBefore, leaf.NotAfter).Unix()))
	t.mu.Unlock()
	if changed {
		t.check()
	}
}

// watched records the watchdog's check of name: the leaf a handshake gets
// (nil: none), the newest in storage (nil: none), and the problem with
// serving it, which makes the name degraded and the source unready.
func (t *tracker) watched(name string, served, stored *x509.Certificate, problem string) {
	t.mu.Lock()
	st := t.get(name)
	st.servedNotAfter, st.storedNotAfter, st.servedProblem = time.Time{}, time.Time{}, problem
	if served != nil {
		st.servedNotAfter = served.NotAfter
		t.m.servedExpiry.WithLabelValues(name).Set(float64(served.NotAfter.Unix()))
	} else {
		t.m.servedExpiry.DeleteLabelValues(name)
	}
	if stored != nil {
		st.storedNotAfter = stored.NotAfter
	}
	t.mu.Unlock()
	t.check()
}

// stapling records the OCSP stapling state of name's certificate (nil:
// it names no responder) and the problem with it ("" when none), which
// makes the name degraded but not unready: the certificate still serves.
func (t *tracker) stapling(name string, st *OCSPStatus, problem string) {
	t.mu.Lock()
	c := t.get(name)
	c.ocsp, c.ocspProblem = st, problem
	if st == nil {
		t.m.ocspStapled.DeleteLabelValues(name)
		t.m.ocspNextUpdate.DeleteLabelValues(name)
		t.m.ocspRevoked.DeleteLabelValues(name)
	} else {
		stapled, revoked := 0.0, 0.0
		if st.Stapled {
			stapled = 1
			t.m.ocspNextUpdate.WithLabelValues(name).Set(float64(st.NextUpdate.Unix()))
		} else {
			t.m.ocspNextUpdate.DeleteLabelValues(name)
		}
		if st.Stapled && st.Status == "revoked" {
			revoked = 1
		}
		t.m.ocspStapled.WithLabelValues(name).Set(stapled)
		t.m.ocspRevoked.WithLabelValues(name).Set(revoked)
	}
	t.mu.Unlock()
	t.check()
}

// forget drops a name (an internal-CA name evicted from its cache).
func (t *tracker) forget(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.certs, name)
	for _, v := range []*prometheus.GaugeVec{t.m.expiry, t.m.servedExpiry, t.m.renewalDue, t.m.lastAttempt,
		t.m.lastSuccess, t.m.failures, t.m.degraded, t.m.ledgerOrders, t.m.ocspStapled, t.m.ocspNextUpdate, t.m.ocspRevoked} {
		v.DeleteLabelValues(name)
	}
	t.m.info.DeletePartialMatch(prometheus.Labels{"domain": name})
}

// renewalDue is when a certificate enters its renewal window.
func renewalDue(notBefore, notAfter time.Time) time.Time {
	life := notAfter.Sub(notBefore)
	return notAfter.Add(-time.Duration(float64(life) * renewalRatio))
}

// warnWindow is how long before expiry a certificate counts as expiring
// soon: warnBefore (7 days), but never more than half the renewal window,
// so that short-lived certificates (6-day ACME profiles, internal CA
// leaves) are not always "expiring soon".
func (t *tracker) warnWindow(st *certState) time.Duration {
	half := time.Duration(float64(st.notAfter.Sub(st.notBefore)) * renewalRatio / 2)
	return min(t.warnBefore, half)
}

// reason says why a certificate needs an operator, or "".
func (t *tracker) reason(st *certState, now time.Time) string {
	switch {
	case st.servedProblem != "":
		return st.servedProblem
	case st.notAfter.IsZero():
		if st.lastErr != "" {
			return "no certificate yet: " + st.lastErr
		}
		return "no certificate yet"
	case now.After(st.notAfter):
		return "certificate expired at " + st.notAfter.UTC().Format(time.RFC3339)
	case st.ocspProblem != "":
		return st.ocspProblem
	case st.failures >= failingAfter:
		return fmt.Sprintf("%d renewal attempts failed in a row: %s", st.failures, st.lastErr)
	case st.notAfter.Sub(now) < t.warnWindow(st):
		return "certificate expires soon, at " + st.notAfter.UTC().Format(time.RFC3339)
	}
	return ""
}

// check recomputes the degraded gauge and logs a warning when a
// certificate's reason to need an operator appears or changes.
func (t *tracker) check() {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	for name, st := range t.certs {
		r := t.reason(st, now)
		v := 0.0
		if r != "" {
			v = 1
		}
		t.m.degraded.WithLabelValues(name).Set(v)
		if r == st.warning {
			continue
		}
		st.warning = r
		// A certificate not obtained yet is normal for a moment after the
		// start; only failures make that worth a warning.
		if r != "" && !(st.notAfter.IsZero() && st.failures == 0) {
			t.log.Warn("certificate needs attention", "domain", name, "reason", r)
		}
	}
}

// readyErr returns nil when every name has an unexpired certificate, else
// what is missing for the first name that lacks one.
func (t *tracker) readyErr() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	names := make([]string, 0, len(t.certs))
	for n := range t.certs {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		st := t.certs[n]
		switch {
		case st.optional:
		case st.servedProblem != "":
			return fmt.Errorf("certificate for %s: %s", n, st.servedProblem)
		case st.notAfter.IsZero() && st.lastErr != "":
			return fmt.Errorf("no certificate for %s yet: %s", n, st.lastErr)
		case st.notAfter.IsZero() && !st.lastAttempt.IsZero():
			return fmt.Errorf("no certificate for %s yet: obtaining it", n)
		case st.notAfter.IsZero():
			return fmt.Errorf("no certificate for %s yet", n)
		case now.After(st.notAfter):
			return fmt.Errorf("certificate for %s expired at %s", n, st.notAfter.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

func (t *tracker) status() []Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	out := make([]Status, 0, len(t.certs))
	for name, st := range t.certs {
		s := Status{
			Names:               []string{name},
			Source:              t.source,
			Issuer:              st.issuer,
			NotBefore:           st.notBefore,
			NotAfter:            st.notAfter,
			LastAttempt:         st.lastAttempt,
			LastResult:          st.lastResult,
			ConsecutiveFailures: st.failures,
			LastError:           st.lastErr,
			Warning:             t.reason(st, now),
			ServedNotAfter:      st.servedNotAfter,
			StoredNotAfter:      st.storedNotAfter,
		}
		if st.ocsp != nil {
			o := *st.ocsp
			s.OCSP = &o
		}
		if !st.notAfter.IsZero() {
			s.RenewalDue = renewalDue(st.notBefore, st.notAfter)
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Names[0], b.Names[0]) })
	return out
}
