package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ocsp"
)

// OCSP stapling for static certificates (certmagic staples its own).
// A certificate without an OCSP responder URL, the normal case since Let's
// Encrypt turned OCSP off, is left alone: no fetch, no log, no series.
const (
	ocspTimeout     = 10 * time.Second // one fetch, issuer included
	ocspMaxResponse = 1 << 20          // bytes; responses are a few KiB
	ocspRetryMin    = time.Minute      // first retry after a failed fetch, doubling
	ocspRetryMax    = time.Hour        // longest time between retries
	// ocspNoNextUpdate is how long a response without nextUpdate is used
	// (mozilla::pkix accepts one for a day after its thisUpdate).
	ocspNoNextUpdate = 24 * time.Hour
	// ocspSkew is how far in the future a thisUpdate may be (clock skew).
	ocspSkew = 5 * time.Minute
)

// oidTLSFeature is the TLS feature extension (RFC 7633); a certificate
// whose value lists status_request (5) is "must-staple".
var oidTLSFeature = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 24}

// OCSP fetch results, the values of the result label of
// ocsp_fetches_total.
const (
	ocspResultGood    = "good"
	ocspResultRevoked = "revoked"
	ocspResultUnknown = "unknown"
	ocspResultError   = "error"
)

// errOCSPUnknown is a response whose status is unknown: the responder does
// not know the certificate, and it is not stapled.
var errOCSPUnknown = errors.New("OCSP responder says the certificate's status is unknown")

// OCSPStatus is the OCSP stapling state of a static certificate that names
// an OCSP responder, in [Status]. Times are zero (and omitted) when unknown.
type OCSPStatus struct {
	// Responder is the OCSP URL in the certificate.
	Responder string `json:"responder"`
	// MustStaple reports whether the certificate carries the TLS feature
	// extension asking for a stapled response: clients that enforce it
	// refuse the certificate without one.
	MustStaple bool `json:"must_staple,omitempty"`
	// Stapled reports whether handshakes get a response now. Status
	// ("good" or "revoked"), ThisUpdate and NextUpdate describe the last
	// response stapled (RevokedAt, when it says revoked, the time of
	// revocation); it is no longer stapled once NextUpdate passes.
	Stapled    bool      `json:"stapled"`
	Status     string    `json:"status,omitempty"`
	ThisUpdate time.Time `json:"this_update,omitzero"`
	NextUpdate time.Time `json:"next_update,omitzero"`
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
	// LastFetch is when the responder was last asked, NextFetch when it
	// will be asked next.
	LastFetch time.Time `json:"last_fetch,omitzero"`
	NextFetch time.Time `json:"next_fetch,omitzero"`
	// ConsecutiveFailures counts fetches failed since the last success;
	// LastError is the last failure, empty after a success.
	ConsecutiveFailures int    `json:"consecutive_failures,omitempty"`
	LastError           string `json:"last_error,omitempty"`
}

// stapler keeps an OCSP response stapled to the static certificate: it
// fetches one when the certificate is loaded, again half-way to the
// response's nextUpdate, retries failures with backoff while serving the
// last response, and stops stapling it once nextUpdate passes.
type stapler struct {
	log        *slog.Logger
	metrics    *metrics
	track      *tracker
	now        func() time.Time
	refreshMax time.Duration // Config.OCSPRefreshInterval; 0: half-way only
	client     *http.Client

	staple atomic.Pointer[staple] // read on every handshake
	wake   chan struct{}          // a new target was set

	mu     sync.Mutex
	target *ocspTarget // nil: nothing to staple
}

// staple is a response stapled to one loaded certificate.
type staple struct {
	of      *tls.Certificate // the certificate as loaded
	cert    *tls.Certificate // a copy of of with OCSPStaple set
	staleAt time.Time        // from then on it is not served
}

// ocspTarget is a loaded certificate that names an OCSP responder. Its st
// is written only by the stapler's run loop (set makes a new target).
type ocspTarget struct {
	cert         *tls.Certificate
	leaf, issuer *x509.Certificate // issuer nil: fetched from the leaf's issuer URL
	file         string
	names        []string
	st           OCSPStatus
}

func newStapler(cfg Config, m *metrics, track *tracker) *stapler {
	return &stapler{
		log: cfg.Logger, metrics: m, track: track, now: cfg.Now,
		refreshMax: cfg.OCSPRefreshInterval,
		client:     &http.Client{Timeout: ocspTimeout},
		wake:       make(chan struct{}, 1),
	}
}

// get returns c with its staple when one is fresh, else c. A staple is
// never served past its nextUpdate, whether or not the run loop has
// dropped it yet.
func (o *stapler) get(c *tls.Certificate) *tls.Certificate {
	if s := o.staple.Load(); s != nil && s.of == c && o.now().Before(s.staleAt) {
		return s.cert
	}
	return c
}

// set makes c, just loaded from file for names, the certificate to staple.
// A certificate without a responder URL clears the OCSP state silently,
// unless it is must-staple: that can never be satisfied, and is a warning.
func (o *stapler) set(file string, c *tls.Certificate, names []string) {
	leaf := c.Leaf
	must := mustStaple(leaf)
	var t *ocspTarget
	if len(leaf.OCSPServer) > 0 {
		t = &ocspTarget{cert: c, leaf: leaf, issuer: issuerIn(c), file: file, names: names,
			st: OCSPStatus{Responder: leaf.OCSPServer[0], MustStaple: must}}
	}
	o.staple.Store(nil)
	if t == nil {
		o.mu.Lock()
		o.target = nil
		o.mu.Unlock()
		problem := ""
		if must {
			problem = "must-staple certificate names no OCSP responder: clients that enforce must-staple refuse it"
			o.log.Warn("must-staple certificate without an OCSP responder URL; clients that enforce must-staple refuse it", "file", file)
		}
		for _, n := range names {
			o.track.stapling(n, nil, problem)
		}
		return
	}
	o.report(t) // before the run loop can see t: from then on only it touches t.st
	o.mu.Lock()
	o.target = t
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// run fetches and refreshes staples until ctx is done.
func (o *stapler) run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-o.wake:
		case <-timer.C:
		}
		if ctx.Err() != nil {
			return nil
		}
		timer.Reset(o.step(ctx))
	}
}

// step fetches a response when one is due and drops a staple past its
// nextUpdate; it returns how long until it has work again.
func (o *stapler) step(ctx context.Context) time.Duration {
	o.mu.Lock()
	t := o.target
	o.mu.Unlock()
	if t == nil {
		return ocspRetryMax // woken by set
	}
	if !t.st.NextFetch.After(o.now()) {
		o.fetch(ctx, t)
	}
	o.expire(t)
	next := t.st.NextFetch
	if s := o.staple.Load(); s != nil && s.of == t.cert && s.staleAt.Before(next) {
		next = s.staleAt
	}
	return max(next.Sub(o.now()), 0)
}

// fetch asks the responder for t's status and staples the answer.
func (o *stapler) fetch(ctx context.Context, t *ocspTarget) {
	fctx, cancel := context.WithTimeout(ctx, ocspTimeout)
	der, resp, err := o.query(fctx, t)
	cancel()
	if ctx.Err() != nil {
		return // shutting down
	}
	o.mu.Lock()
	current := o.target == t
	o.mu.Unlock()
	if !current {
		return // the file was replaced meanwhile
	}
	now := o.now()
	t.st.LastFetch = now
	if err != nil {
		o.failed(t, now, err)
		return
	}
	stapled := *t.cert
	stapled.OCSPStaple = der
	staleAt := resp.NextUpdate
	if staleAt.IsZero() {
		staleAt = resp.ThisUpdate.Add(ocspNoNextUpdate)
	}
	if resp.Certificate != nil && resp.Certificate.NotAfter.Before(staleAt) {
		staleAt = resp.Certificate.NotAfter // the responder's own certificate bounds it
	}
	staleAt = minTime(staleAt, t.leaf.NotAfter)
	o.staple.Store(&staple{of: t.cert, cert: &stapled, staleAt: staleAt})

	status, result := "good", ocspResultGood
	if resp.Status == ocsp.Revoked {
		status, result = "revoked", ocspResultRevoked
	}
	o.metrics.ocspFetches.WithLabelValues(result).Inc()
	changed := !t.st.Stapled || t.st.Status != status
	t.st.Stapled, t.st.Status = true, status
	t.st.ThisUpdate, t.st.NextUpdate, t.st.RevokedAt = resp.ThisUpdate, staleAt, time.Time{}
	if resp.Status == ocsp.Revoked {
		t.st.RevokedAt = resp.RevokedAt
	}
	t.st.ConsecutiveFailures, t.st.LastError = 0, ""
	refresh := resp.ThisUpdate.Add(staleAt.Sub(resp.ThisUpdate) / 2)
	floor := ocspRetryMin // a response already past half-way is not refetched in a loop
	if o.refreshMax > 0 {
		refresh = minTime(refresh, now.Add(o.refreshMax))
		floor = min(floor, o.refreshMax)
	}
	t.st.NextFetch = maxTime(refresh, now.Add(floor))

	attrs := []any{"file", t.file, "status", status, "this_update", rfc3339(resp.ThisUpdate),
		"next_update", rfc3339(staleAt)}
	switch {
	case resp.Status == ocsp.Revoked:
		if changed {
			o.log.Error("certificate revoked, says its OCSP responder; replace it",
				append(attrs, "revoked_at", rfc3339(resp.RevokedAt))...)
		}
	case changed:
		o.log.Info("OCSP response stapled", attrs...)
	default:
		o.log.Debug("OCSP response refreshed", attrs...)
	}
	o.report(t)
}

// failed records a failed fetch: the last response is still served until
// its nextUpdate, and the fetch is retried with backoff.
func (o *stapler) failed(t *ocspTarget, now time.Time, err error) {
	result := ocspResultError
	if errors.Is(err, errOCSPUnknown) {
		result = ocspResultUnknown
	}
	o.metrics.ocspFetches.WithLabelValues(result).Inc()
	t.st.ConsecutiveFailures++
	t.st.LastError = err.Error()
	delay := ocspRetryMin << min(t.st.ConsecutiveFailures-1, 6)
	delay = min(delay, ocspRetryMax)
	if o.refreshMax > 0 {
		delay = min(delay, o.refreshMax)
	}
	t.st.NextFetch = now.Add(delay)

	attrs := []any{"file", t.file, "responder", t.st.Responder, "must_staple", t.st.MustStaple,
		"next_fetch", rfc3339(t.st.NextFetch), "err", err}
	if s := o.fresh(t); s != nil {
		o.log.Warn("OCSP refresh failed; stapling the last response until its next update",
			append(attrs, "next_update", rfc3339(s.staleAt))...)
	} else {
		o.log.Warn("OCSP fetch failed; serving the certificate without a staple", attrs...)
	}
	o.report(t)
}

// expire drops t's staple once its nextUpdate has passed.
func (o *stapler) expire(t *ocspTarget) {
	s := o.staple.Load()
	if s == nil || s.of != t.cert || o.now().Before(s.staleAt) || !o.staple.CompareAndSwap(s, nil) {
		return
	}
	t.st.Stapled = false
	o.log.Warn("OCSP response passed its next update; serving the certificate without a staple",
		"file", t.file, "next_update", rfc3339(s.staleAt), "must_staple", t.st.MustStaple, "last_error", t.st.LastError)
	o.report(t)
}

// fresh returns t's staple if one is served now.
func (o *stapler) fresh(t *ocspTarget) *staple {
	if s := o.staple.Load(); s != nil && s.of == t.cert && o.now().Before(s.staleAt) {
		return s
	}
	return nil
}

// report hands t's state to the tracker for each of its names, with what
// makes it need an operator: a revoked certificate, or a must-staple one
// served without a fresh response.
func (o *stapler) report(t *ocspTarget) {
	problem := ""
	switch fresh := o.fresh(t) != nil; {
	case fresh && t.st.Status == "revoked":
		problem = "certificate revoked at " + rfc3339(t.st.RevokedAt) + ", says its OCSP responder"
	case !fresh && t.st.MustStaple && t.st.LastError != "":
		problem = "must-staple certificate has no fresh OCSP response: " + t.st.LastError
	case !fresh && t.st.MustStaple && t.st.Status != "":
		problem = "must-staple certificate has no fresh OCSP response: the last one expired at " + rfc3339(t.st.NextUpdate)
	}
	for _, n := range t.names {
		st := t.st
		o.track.stapling(n, &st, problem)
	}
}

// query asks t's responder and returns the response checked against the
// leaf and its issuer.
func (o *stapler) query(ctx context.Context, t *ocspTarget) ([]byte, *ocsp.Response, error) {
	if t.issuer == nil {
		issuer, err := o.fetchIssuer(ctx, t.leaf)
		if err != nil {
			return nil, nil, err
		}
		t.issuer = issuer
	}
	reqDER, err := ocsp.CreateRequest(t.leaf, t.issuer, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("creating OCSP request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.st.Responder, bytes.NewReader(reqDER))
	if err != nil {
		return nil, nil, fmt.Errorf("creating OCSP request: %w", err)
	}
	req.Header.Set("Content-Type", "application/ocsp-request")
	req.Header.Set("Accept", "application/ocsp-response")
	body, err := o.download(req)
	if err != nil {
		return nil, nil, fmt.Errorf("asking OCSP responder: %w", err)
	}
	resp, err := ocsp.ParseResponseForCert(body, t.leaf, t.issuer)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing OCSP response: %w", err)
	}
	if err := checkOCSP(resp, t.issuer, o.now()); err != nil {
		return nil, nil, err
	}
	return body, resp, nil
}

// checkOCSP checks what ParseResponseForCert leaves to the caller: a
// delegated responder must be allowed to sign responses, and the response
// must be current and know the certificate.
func checkOCSP(resp *ocsp.Response, issuer *x509.Certificate, now time.Time) error {
	if rc := resp.Certificate; rc != nil && !rc.Equal(issuer) {
		// RFC 6960 4.2.2.2: a delegated responder carries id-kp-OCSPSigning.
		if !slices.Contains(rc.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning) {
			return fmt.Errorf("OCSP responder certificate %q is not the issuer and may not sign responses (no OCSPSigning usage)", rc.Subject)
		}
		if now.After(rc.NotAfter) || now.Before(rc.NotBefore) {
			return fmt.Errorf("OCSP responder certificate %q is not valid now", rc.Subject)
		}
	}
	switch {
	case resp.Status == ocsp.Unknown:
		return errOCSPUnknown
	case resp.ThisUpdate.After(now.Add(ocspSkew)):
		return fmt.Errorf("OCSP response is from the future (this update %s)", rfc3339(resp.ThisUpdate))
	case !resp.NextUpdate.IsZero() && !now.Before(resp.NextUpdate):
		return fmt.Errorf("OCSP response is stale (next update %s)", rfc3339(resp.NextUpdate))
	case resp.NextUpdate.IsZero() && !now.Before(resp.ThisUpdate.Add(ocspNoNextUpdate)):
		return fmt.Errorf("OCSP response without next update is older than %v", ocspNoNextUpdate)
	}
	return nil
}

// fetchIssuer gets the issuer from the leaf's authority information access
// URL, for a file that holds the leaf without its issuer.
func (o *stapler) fetchIssuer(ctx context.Context, leaf *x509.Certificate) (*x509.Certificate, error) {
	if len(leaf.IssuingCertificateURL) == 0 {
		return nil, errors.New("the certificate file has no issuer certificate and the certificate names no issuer URL")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, leaf.IssuingCertificateURL[0], nil)
	if err != nil {
		return nil, fmt.Errorf("fetching issuer certificate: %w", err)
	}
	body, err := o.download(req)
	if err != nil {
		return nil, fmt.Errorf("fetching issuer certificate: %w", err)
	}
	issuer, err := x509.ParseCertificate(body)
	if err != nil {
		return nil, fmt.Errorf("parsing issuer certificate from %s: %w", leaf.IssuingCertificateURL[0], err)
	}
	if err := leaf.CheckSignatureFrom(issuer); err != nil {
		return nil, fmt.Errorf("issuer certificate from %s did not sign the certificate: %w", leaf.IssuingCertificateURL[0], err)
	}
	return issuer, nil
}

// download does req and returns a 200 answer's body, at most
// ocspMaxResponse bytes.
func (o *stapler) download(req *http.Request) ([]byte, error) {
	resp, err := o.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s", req.URL.Redacted(), resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, ocspMaxResponse+1))
	if err != nil {
		return nil, err
	}
	if len(body) > ocspMaxResponse {
		return nil, fmt.Errorf("%s answered more than %d bytes", req.URL.Redacted(), ocspMaxResponse)
	}
	return body, nil
}

// issuerIn returns the certificate in c's chain that signed its leaf, or
// nil.
func issuerIn(c *tls.Certificate) *x509.Certificate {
	for _, der := range c.Certificate[1:] {
		cand, err := x509.ParseCertificate(der)
		if err == nil && c.Leaf.CheckSignatureFrom(cand) == nil {
			return cand
		}
	}
	return nil
}

// mustStaple reports whether leaf's TLS feature extension lists
// status_request.
func mustStaple(leaf *x509.Certificate) bool {
	for _, ext := range leaf.Extensions {
		if !ext.Id.Equal(oidTLSFeature) {
			continue
		}
		var features []int
		if _, err := asn1.Unmarshal(ext.Value, &features); err == nil && slices.Contains(features, 5) {
			return true
		}
	}
	return false
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
