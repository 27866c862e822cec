package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outrider-dev/outrider/internal/dirwatch"
	"github.com/prometheus/client_golang/prometheus"
)

// Client certificates, ghostunnel's core for HTTP: outrider asks for a
// certificate in the handshake and checks it itself, in VerifyConnection,
// against the CA bundle and CRL it holds now — both reloaded when their
// files change, so a rotated CA or a revocation takes effect without a
// restart, resumed sessions included. A chain that does not verify, a
// revoked certificate, or none where one is required is a TLS alert; a
// good certificate that no --allow-client rule admits is a 403. Either way
// the client learns nothing more, and the reason goes to the log and to
// outrider_proxy_client_cert_refusals_total. The app learns who called
// through X-Client-Cert-* headers that outrider sets and never takes from
// the client.

// Client-authentication modes.
const (
	ClientAuthRequire  = "require"  // every connection must present a good certificate
	ClientAuthOptional = "optional" // one presented must be good; none is allowed
)

// Reasons a client certificate was refused, the values of the reason label
// of outrider_proxy_client_cert_refusals_total.
const (
	refusedMissing    = "missing"     // none presented, and one is required
	refusedUntrusted  = "untrusted"   // no chain to --client-ca
	refusedExpired    = "expired"     // expired or not yet valid
	refusedInvalid    = "invalid"     // any other verification failure (key usage, …)
	refusedRevoked    = "revoked"     // listed in --client-crl
	refusedNotAllowed = "not_allowed" // good, but no --allow-client rule matches: 403
)

var refusalReasons = [...]string{refusedMissing, refusedUntrusted, refusedExpired, refusedInvalid, refusedRevoked, refusedNotAllowed}

// clientCertError is a refused client certificate; the handshake returns it.
type clientCertError struct {
	reason  string
	subject string // of the leaf, when there was one
	err     error
}

func (e *clientCertError) Error() string {
	if e.err == nil {
		return "client certificate " + e.reason
	}
	return "client certificate " + e.reason + ": " + e.err.Error()
}

func (e *clientCertError) Unwrap() error { return e.err }

// clientRule is one --allow-client rule.
type clientRule struct {
	kind   string // "cn", "dns", "uri" or "ou"
	value  string
	prefix bool // a uri= rule ending in "*" matches by prefix
}

// parseClientRule parses "cn=alice", "dns=svc.example", "ou=eng",
// "uri=spiffe://example.org/ns/prod/sa/web" or "uri=spiffe://example.org/ns/prod/*".
func parseClientRule(s string) (clientRule, error) {
	kind, value, ok := strings.Cut(s, "=")
	kind = strings.ToLower(strings.TrimSpace(kind))
	if !ok || value == "" {
		return clientRule{}, fmt.Errorf("invalid --allow-client %q: want cn=NAME, dns=NAME, uri=URI[*] or ou=UNIT", s)
	}
	r := clientRule{kind: kind, value: value}
	switch kind {
	case "cn", "dns", "ou":
	case "uri":
		if v, p := strings.CutSuffix(value, "*"); p {
			r.value, r.prefix = v, true
		}
		if u, err := url.Parse(r.value); err != nil || u.Scheme == "" {
			return clientRule{}, fmt.Errorf("invalid --allow-client %q: the uri must be absolute, such as spiffe://example.org/ns/prod/*", s)
		}
	default:
		return clientRule{}, fmt.Errorf("invalid --allow-client %q: want cn=, dns=, uri= or ou=", s)
	}
	return r, nil
}

// matches reports whether the rule admits leaf.
func (r clientRule) matches(leaf *x509.Certificate) bool {
	switch r.kind {
	case "cn":
		return leaf.Subject.CommonName == r.value
	case "dns":
		for _, d := range leaf.DNSNames {
			if strings.EqualFold(d, r.value) {
				return true
			}
		}
	case "ou":
		for _, ou := range leaf.Subject.OrganizationalUnit {
			if ou == r.value {
				return true
			}
		}
	case "uri":
		for _, u := range leaf.URIs {
			if s := u.String(); s == r.value || r.prefix && strings.HasPrefix(s, r.value) {
				return true
			}
		}
	}
	return false
}

// clientTrust holds the CA bundle and CRL, reloaded on change, and checks
// client certificates against them.
type clientTrust struct {
	caFile, crlFile string
	require         bool
	rules           []clientRule
	log             *slog.Logger
	reloads         *prometheus.CounterVec
	refusals        *prometheus.CounterVec

	base  atomic.Pointer[tls.Config] // the server's config, set by configure
	state atomic.Pointer[trustState]

	mu  sync.Mutex // serializes loads; guards sum
	sum [32]byte
}

// trustState is one loaded CA bundle and CRL.
type trustState struct {
	pool    *x509.CertPool
	revoked map[string]bool // issuer's raw subject + serial, see revokedKey
	tlsCfg  *tls.Config     // base with ClientCAs set: what handshakes use
}

func revokedKey(rawIssuer []byte, serial fmt.Stringer) string {
	return string(rawIssuer) + "\x00" + serial.String()
}

// newClientTrust loads the files once; nil when client certificates are off.
func newClientTrust(cfg Config) (*clientTrust, error) {
	if cfg.ClientCAFile == "" {
		return nil, nil
	}
	const ns, sub = "outrider", "proxy"
	t := &clientTrust{caFile: cfg.ClientCAFile, crlFile: cfg.ClientCRLFile, require: cfg.ClientAuth != ClientAuthOptional,
		log: cfg.Logger,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "client_ca_reloads_total",
			Help: "Loads of --client-ca and --client-crl by result; a failed one keeps the previous bundle and CRL.",
		}, []string{"result"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "client_cert_refusals_total",
			Help: "Client certificates refused by reason: missing, untrusted, expired, invalid, revoked (TLS alerts) and not_allowed (403).",
		}, []string{"reason"}),
	}
	for _, s := range cfg.AllowClients {
		r, _ := parseClientRule(s) // checked by Validate
		t.rules = append(t.rules, r)
	}
	for _, r := range refusalReasons {
		t.refusals.WithLabelValues(r)
	}
	t.reloads.WithLabelValues("success")
	t.reloads.WithLabelValues("error")
	if _, err := t.load(); err != nil {
		return nil, err
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(t.reloads, t.refusals)
	}
	return t, nil
}

func (t *clientTrust) refuse(reason string) { t.refusals.WithLabelValues(reason).Inc() }

// load reads the CA bundle and CRL and installs them if their content
// changed. A broken file keeps the previous state.
func (t *clientTrust) load() (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	caPEM, err := os.ReadFile(t.caFile)
	if err != nil {
		return false, t.fail(fmt.Errorf("reading --client-ca: %w", err))
	}
	var crlBytes []byte
	if t.crlFile != "" {
		if crlBytes, err = os.ReadFile(t.crlFile); err != nil {
			return false, t.fail(fmt.Errorf("reading --client-crl: %w", err))
		}
	}
	sum := sha256.Sum256(append(append(bytes.Clone(caPEM), 0), crlBytes...))
	if sum == t.sum && t.state.Load() != nil {
		return false, nil
	}
	pool, cas, err := parseCABundle(caPEM)
	if err != nil {
		return false, t.fail(fmt.Errorf("--client-ca %s: %w", t.caFile, err))
	}
	st := &trustState{pool: pool, revoked: map[string]bool{}}
	if t.crlFile != "" {
		n, err := addCRLs(st.revoked, crlBytes, cas, t.log)
		if err != nil {
			return false, t.fail(fmt.Errorf("--client-crl %s: %w", t.crlFile, err))
		}
		t.log.Info("client crl loaded", "file", t.crlFile, "revoked", n)
	}
	st.tlsCfg = derive(t.base.Load(), pool)
	t.sum = sum
	t.state.Store(st)
	t.reloads.WithLabelValues("success").Inc()
	t.log.Info("client ca loaded", "file", t.caFile, "certificates", len(cas))
	return true, nil
}

func (t *clientTrust) fail(err error) error {
	t.reloads.WithLabelValues("error").Inc()
	return err
}

// parseCABundle returns the CA certificates of a PEM bundle.
func parseCABundle(b []byte) (*x509.CertPool, []*x509.Certificate, error) {
	pool := x509.NewCertPool()
	var cas []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("parsing a certificate: %w", err)
		}
		pool.AddCert(c)
		cas = append(cas, c)
	}
	if len(cas) == 0 {
		return nil, nil, errors.New("no PEM certificate in it")
	}
	return pool, cas, nil
}

// addCRLs adds the serials revoked by each CRL (PEM blocks "X509 CRL", or
// one DER CRL) to revoked. A CRL must be signed by one of cas; a CRL past
// its next update still applies, with a warning.
func addCRLs(revoked map[string]bool, b []byte, cas []*x509.Certificate, log *slog.Logger) (int, error) {
	var ders [][]byte
	if bytes.Contains(b, []byte("-----BEGIN")) {
		for {
			var block *pem.Block
			block, b = pem.Decode(b)
			if block == nil {
				break
			}
			if block.Type == "X509 CRL" {
				ders = append(ders, block.Bytes)
			}
		}
	} else if len(b) > 0 {
		ders = [][]byte{b}
	}
	if len(ders) == 0 {
		return 0, errors.New("no CRL in it")
	}
	n := 0
	for _, der := range ders {
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			return 0, fmt.Errorf("parsing a CRL: %w", err)
		}
		var issuer *x509.Certificate
		for _, ca := range cas {
			if bytes.Equal(ca.RawSubject, crl.RawIssuer) && crl.CheckSignatureFrom(ca) == nil {
				issuer = ca
				break
			}
		}
		if issuer == nil {
			return 0, fmt.Errorf("the CRL of %q is not signed by a certificate in --client-ca", crl.Issuer.String())
		}
		if !crl.NextUpdate.IsZero() && time.Now().After(crl.NextUpdate) {
			log.Warn("client crl is past its next update; still applied", "issuer", crl.Issuer.String(), "next_update", crl.NextUpdate.UTC().Format(time.RFC3339))
		}
		for _, e := range crl.RevokedCertificateEntries {
			revoked[revokedKey(crl.RawIssuer, e.SerialNumber)] = true
			n++
		}
	}
	return n, nil
}

// derive returns base asking for client certificates with ClientCAs as the
// hint, or nil while there is no base yet.
func derive(base *tls.Config, pool *x509.CertPool) *tls.Config {
	if base == nil {
		return nil
	}
	c := base.Clone()
	c.ClientCAs = pool
	c.GetConfigForClient = nil
	return c
}

// configure makes cfg ask for client certificates and check them. Go's own
// verification is off (RequestClientCert): it would use a fixed pool and
// count nothing; verify does it with the pool of the moment.
func (t *clientTrust) configure(cfg *tls.Config) {
	cfg.ClientAuth = tls.RequestClientCert
	next := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := t.verify(cs); err != nil {
			return err
		}
		return next(cs)
	}
	t.base.Store(cfg.Clone())
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return t.state.Load().tlsCfg, nil
	}
	t.mu.Lock()
	st := *t.state.Load()
	st.tlsCfg = derive(t.base.Load(), st.pool)
	t.state.Store(&st)
	t.mu.Unlock()
}

// verify checks the client's certificate chain, its revocation and, when
// required, its presence.
func (t *clientTrust) verify(cs tls.ConnectionState) error {
	if cs.NegotiatedProtocol == "acme-tls/1" {
		return nil // the CA validating a TLS-ALPN-01 challenge has no certificate
	}
	if len(cs.PeerCertificates) == 0 {
		if t.require {
			t.refuse(refusedMissing)
			return &clientCertError{reason: refusedMissing}
		}
		return nil
	}
	st := t.state.Load()
	leaf := cs.PeerCertificates[0]
	opts := x509.VerifyOptions{Roots: st.pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if len(cs.PeerCertificates) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	chains, err := leaf.Verify(opts)
	if err != nil {
		reason := refusedInvalid
		var unknown x509.UnknownAuthorityError
		var invalid x509.CertificateInvalidError
		switch {
		case errors.As(err, &unknown):
			reason = refusedUntrusted
		case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
			reason = refusedExpired
		}
		t.refuse(reason)
		return &clientCertError{reason: reason, subject: leaf.Subject.String(), err: err}
	}
	if len(st.revoked) > 0 {
		for _, c := range chains[0] {
			if st.revoked[revokedKey(c.RawIssuer, c.SerialNumber)] {
				t.refuse(refusedRevoked)
				return &clientCertError{reason: refusedRevoked, subject: c.Subject.String()}
			}
		}
	}
	return nil
}

// logRefusal logs a handshake or request refused for the client's
// certificate.
func (t *clientTrust) logRefusal(remote string, err error) {
	var ce *clientCertError
	if errors.As(err, &ce) {
		t.log.Info("client certificate refused", "reason", ce.reason, "subject", ce.subject, "remote_addr", remote, "err", err)
	}
}

// reload re-reads the files (SIGHUP); on failure the previous state stays.
func (t *clientTrust) reload(context.Context) error {
	_, err := t.load()
	if err != nil {
		t.log.Warn("client ca reload failed; keeping the previous one", "err", err)
	}
	return err
}

// run reloads when the files' directories change, and every minute.
func (t *clientTrust) run(ctx context.Context) error {
	dirs := []string{filepath.Dir(t.caFile)}
	if t.crlFile != "" && filepath.Dir(t.crlFile) != dirs[0] {
		dirs = append(dirs, filepath.Dir(t.crlFile))
	}
	return dirwatch.Run(ctx, dirwatch.Config{Dirs: dirs, Debounce: 100 * time.Millisecond, Interval: time.Minute, Logger: t.log},
		func(ctx context.Context) { t.reload(ctx) })
}

// Identity headers: what the app is told about a verified client.
const (
	hdrCert        = "X-Client-Cert"             // the leaf, PEM, URL-escaped (nginx's $ssl_client_escaped_cert)
	hdrSubject     = "X-Client-Cert-Subject"     // RFC 2253 distinguished name
	hdrIssuer      = "X-Client-Cert-Issuer"      // RFC 2253 distinguished name
	hdrSerial      = "X-Client-Cert-Serial"      // hex
	hdrFingerprint = "X-Client-Cert-Fingerprint" // SHA-256 of the DER, hex
	hdrDNS         = "X-Client-Cert-Dns"         // DNS SANs, comma-separated
	hdrURI         = "X-Client-Cert-Uri"         // URI SANs, comma-separated
	hdrEmail       = "X-Client-Cert-Email"       // email SANs, comma-separated
	hdrSPIFFE      = "X-Client-Cert-Spiffe-Id"   // the one spiffe:// URI SAN
	hdrNotAfter    = "X-Client-Cert-Not-After"   // RFC 3339
)

// clientIdentity is what a connection's verified certificate tells the
// app, worked out once per connection.
type clientIdentity struct {
	state   *trustState // the CA bundle and CRL it was checked against
	allowed bool
	headers [][2]string
}

// isIdentityHeader reports whether a client header poses as one of ours
// (or as Envoy's X-Forwarded-Client-Cert): it is never passed on.
func isIdentityHeader(k string) bool {
	return strings.HasPrefix(k, hdrCert) || k == "X-Forwarded-Client-Cert"
}

func (t *clientTrust) identity(leaf *x509.Certificate, st *trustState) *clientIdentity {
	id := &clientIdentity{state: st, allowed: len(t.rules) == 0}
	for _, r := range t.rules {
		if r.matches(leaf) {
			id.allowed = true
			break
		}
	}
	if !id.allowed {
		return id
	}
	add := func(k, v string) {
		if v != "" {
			id.headers = append(id.headers, [2]string{k, headerSafe(v)})
		}
	}
	fp := sha256.Sum256(leaf.Raw)
	add(hdrSubject, leaf.Subject.String())
	add(hdrIssuer, leaf.Issuer.String())
	add(hdrSerial, leaf.SerialNumber.Text(16))
	add(hdrFingerprint, hex.EncodeToString(fp[:]))
	add(hdrDNS, strings.Join(leaf.DNSNames, ","))
	var uris []string
	spiffe := ""
	for _, u := range leaf.URIs {
		uris = append(uris, u.String())
		if u.Scheme == "spiffe" {
			if spiffe == "" {
				spiffe = u.String()
			} else {
				spiffe = "-" // more than one is not an SVID: say none
			}
		}
	}
	add(hdrURI, strings.Join(uris, ","))
	if spiffe != "-" {
		add(hdrSPIFFE, spiffe)
	}
	add(hdrEmail, strings.Join(leaf.EmailAddresses, ","))
	add(hdrNotAfter, leaf.NotAfter.UTC().Format(time.RFC3339))
	// Escaped already: not through headerSafe, which would escape its %s.
	id.headers = append(id.headers, [2]string{hdrCert, url.PathEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw})))})
	return id
}

// headerSafe percent-escapes what may not stand in a header value: a CA
// can sign any subject a request asked for, line breaks included. A "%" is
// escaped too, so that the app can unescape without ambiguity.
func headerSafe(v string) string {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c == 0x7f || c == '%' {
			var b strings.Builder
			for j := 0; j < len(v); j++ {
				if c := v[j]; c < 0x20 || c == 0x7f || c == '%' {
					fmt.Fprintf(&b, "%%%02X", c)
				} else {
					b.WriteByte(c)
				}
			}
			return b.String()
		}
	}
	return v
}

// admit removes identity headers the client sent, and for a verified
// client adds ours, or answers 403 when no --allow-client rule admits it.
// It reports whether the request goes on.
func (t *clientTrust) admit(rw *respWriter, r *http.Request) bool {
	for k := range r.Header {
		if isIdentityHeader(k) {
			delete(r.Header, k)
		}
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return true // optional, and none was presented
	}
	var id *clientIdentity
	ci, _ := r.Context().Value(connInfoKey{}).(*connInfo)
	if ci != nil {
		id = ci.ident.Load()
	}
	if st := t.state.Load(); id == nil || id.state != st {
		if id != nil {
			// The CA bundle or CRL was reloaded since this connection's
			// handshake: check it again, so that a revocation reaches
			// connections already open at their next request.
			if err := t.verify(*r.TLS); err != nil {
				t.logRefusal(r.RemoteAddr, err)
				rw.Header()["Connection"] = []string{"close"}
				return false
			}
		}
		id = t.identity(r.TLS.PeerCertificates[0], st)
		if ci != nil {
			ci.ident.Store(id)
		}
	}
	if !id.allowed {
		t.refuse(refusedNotAllowed)
		t.log.Info("client certificate refused", "reason", refusedNotAllowed, "subject", r.TLS.PeerCertificates[0].Subject.String(),
			"remote_addr", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
		rw.Header()["Connection"] = []string{"close"}
		return false
	}
	for _, h := range id.headers {
		r.Header[h[0]] = []string{h[1]}
	}
	return true
}
