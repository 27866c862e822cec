package proxy

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http/httpguts"
)

// shield is what stands between a request that passed the handler's own
// checks and the app, for the protections that are off by default: rate
// limits and the inflight cap (limits.go). The handler holds a nil
// *shield when all of them are off, and then pays one nil check.
type shield struct {
	h        *handler
	trust    *clientTrust
	auth     *forwardAuth
	buffer   *requestBuffer
	compress *compressor
	rate     *rateLimiter
	inflight *inflight

	shed [4]prometheus.Counter // by shedIndex
}

var shedReasons = [...]string{shedRate, shedQueueFull, shedQueueTimeout, shedCanceled}

func shedIndex(reason string) int {
	for i, r := range shedReasons {
		if r == reason {
			return i
		}
	}
	panic("proxy: unknown shed reason " + reason)
}

// newShield returns nil when every protection is off.
func newShield(h *handler, cfg Config, m *metrics, trust *clientTrust) *shield {
	if cfg.MaxInflight == 0 && cfg.RateLimit.PerSecond == 0 && trust == nil && cfg.AuthURL == "" && cfg.BufferRequests == 0 && len(cfg.Compress) == 0 {
		return nil
	}
	s := &shield{h: h, trust: trust, auth: newForwardAuth(h, cfg), buffer: newRequestBuffer(h, cfg), compress: newCompressor(cfg)}
	const ns, sub = "outrider", "proxy"
	shed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "shed_requests_total",
		Help: "Requests refused before the app by reason: rate_limit (429), queue_full and queue_timeout (503), canceled (the client left while queued).",
	}, []string{"reason"})
	for i, r := range shedReasons {
		s.shed[i] = shed.WithLabelValues(r)
	}
	cs := []prometheus.Collector{shed}
	if cfg.RateLimit.PerSecond > 0 {
		evictions := prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "rate_limit_evictions_total",
			Help: "Clients still within their rate window forgotten to make room in the rate-limit table; each is then treated as new.",
		})
		epoch := time.Now()
		s.rate = newRateLimiter(cfg.RateLimit.PerSecond, cfg.RateBurst, func() int64 { return int64(time.Since(epoch)) }, evictions.Inc)
		cs = append(cs, evictions, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "rate_limit_clients",
			Help: "Client addresses the rate limiter now holds state for (at most 65536).",
		}, func() float64 { return float64(s.rate.clients()) }))
	}
	if cfg.MaxInflight > 0 {
		s.inflight = newInflight(cfg.MaxInflight, cfg.QueueTimeout)
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "inflight_requests",
			Help: "Requests now at the app under --max-inflight.",
		}, func() float64 { return float64(len(s.inflight.slots)) }), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "queued_requests",
			Help: "Requests now waiting for a --max-inflight slot.",
		}, func() float64 { return float64(s.inflight.waiting.Load()) }))
	}
	if m.reg != nil {
		m.reg.MustRegister(cs...)
	}
	return s
}

// forward applies the protections, then forwards the request.
func (s *shield) forward(rw *respWriter, r *http.Request, host, target string) {
	h := s.h
	if s.trust != nil && !s.trust.admit(rw, r) {
		h.writeError(rw, http.StatusForbidden)
		return
	}
	if s.rate != nil {
		if ok, wait := s.rate.allow(rateKey(r, h.cfg.TrustedProxies)); !ok {
			s.refuse(rw, r, shedRate, wait)
			return
		}
	}
	if s.auth != nil && !s.auth.check(rw, r, host) {
		return
	}
	if s.buffer != nil {
		ok, done := s.buffer.read(rw, r)
		if !ok {
			return
		}
		defer done()
	}
	if s.inflight != nil {
		if reason := s.inflight.acquire(r.Context()); reason != "" {
			s.refuse(rw, r, reason, time.Second)
			return
		}
		defer s.inflight.release()
	}
	if s.compress != nil && len(r.Header["Upgrade"]) == 0 {
		// Wrapped even when nothing is accepted: Vary is set either way.
		cw := &compressWriter{ResponseWriter: rw.ResponseWriter, c: s.compress, enc: s.compress.negotiate(r),
			secret: authenticated(r, h.cfg.AuthCopyHeaders)}
		rw.ResponseWriter = cw
		clean := false
		defer func() { cw.finish(clean) }() // also when forward panics to cut the response
		h.forward(rw, r, host, target)
		clean = true
		return
	}
	h.forward(rw, r, host, target)
}

// refuse answers a shed request: 429 over the rate, 503 when the app is
// full, both with Retry-After; nothing for a client that has left.
func (s *shield) refuse(rw *respWriter, r *http.Request, reason string, wait time.Duration) {
	s.shed[shedIndex(reason)].Inc()
	if reason == shedCanceled {
		rw.upstreamErr = reasonCanceled
		return
	}
	s.h.log.Debug("request shed", "reason", reason, "method", r.Method, "path", r.URL.Path, "remote_addr", r.RemoteAddr)
	code := http.StatusServiceUnavailable
	if reason == shedRate {
		code = http.StatusTooManyRequests
	}
	rw.Header()["Retry-After"] = []string{retryAfter(wait)}
	s.h.writeError(rw, code)
}

// validateShield reports the problems with the shield's settings.
func (c Config) validateShield() []error {
	errs := c.validateClientAuth()
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"queue timeout", c.QueueTimeout}, {"auth timeout", c.AuthTimeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %v is negative", d.name, d.v))
		}
	}
	if c.AuthURL != "" {
		if _, err := ParseAuthURL(c.AuthURL); err != nil {
			errs = append(errs, err)
		}
	} else if len(c.AuthCopyHeaders) > 0 {
		errs = append(errs, errors.New("--auth-copy-headers needs --auth-url"))
	}
	for _, k := range c.AuthCopyHeaders {
		if !httpguts.ValidHeaderFieldName(k) {
			errs = append(errs, fmt.Errorf("invalid --auth-copy-headers name %q: want a header name such as X-User", k))
		}
	}
	if c.BufferRequests < 0 || c.BufferMemory < 0 {
		errs = append(errs, fmt.Errorf("buffer sizes %d, %d: negative", c.BufferRequests, c.BufferMemory))
	}
	if _, err := ParseCompress(c.Compress); err != nil {
		errs = append(errs, err)
	}
	if c.CompressSecrets && len(c.Compress) == 0 {
		errs = append(errs, errors.New("--compress-secrets needs --compress"))
	}
	if c.MaxInflight < 0 {
		errs = append(errs, fmt.Errorf("max inflight %d is negative", c.MaxInflight))
	}
	if c.RateBurst < 0 {
		errs = append(errs, fmt.Errorf("rate burst %d is negative", c.RateBurst))
	}
	if c.RateLimit.PerSecond < 0 || math.IsNaN(c.RateLimit.PerSecond) {
		errs = append(errs, fmt.Errorf("rate limit %v is negative", c.RateLimit.PerSecond))
	}
	return errs
}

func (c Config) validateClientAuth() []error {
	var errs []error
	if c.ClientCAFile == "" {
		switch {
		case c.ClientAuth != "":
			errs = append(errs, errors.New("--client-auth needs --client-ca"))
		case len(c.AllowClients) > 0:
			errs = append(errs, errors.New("--allow-client needs --client-ca"))
		case c.ClientCRLFile != "":
			errs = append(errs, errors.New("--client-crl needs --client-ca"))
		}
	}
	switch c.ClientAuth {
	case "", ClientAuthRequire, ClientAuthOptional:
	default:
		errs = append(errs, fmt.Errorf("invalid --client-auth %q: want require or optional", c.ClientAuth))
	}
	for _, r := range c.AllowClients {
		if _, err := parseClientRule(r); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// CheckShield checks the shield's settings in c (client certificates,
// forward auth, limits, buffering, compression), reading ClientCAFile and
// ClientCRLFile, so that a command can refuse them before it starts
// anything else. New checks them again.
func CheckShield(c Config) error {
	if err := errors.Join(c.validateShield()...); err != nil {
		return err
	}
	c.Registerer = nil
	_, err := newClientTrust(c.withDefaults())
	return err
}
