package certs

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the certs series. A nil Registerer leaves them unexported but
// still usable. Every per-certificate series carries a domain label, which
// the configuration bounds (the internal CA without Domains caps its
// names at Config.InternalMaxNames).
type metrics struct {
	expiry       *prometheus.GaugeVec
	servedExpiry *prometheus.GaugeVec
	reloads      *prometheus.CounterVec
	refused      *prometheus.CounterVec

	renewalDue   *prometheus.GaugeVec
	lastAttempt  *prometheus.GaugeVec
	lastSuccess  *prometheus.GaugeVec
	failures     *prometheus.GaugeVec
	degraded     *prometheus.GaugeVec
	info         *prometheus.GaugeVec
	renewals     *prometheus.CounterVec
	ledgerOrders *prometheus.GaugeVec
	onDemand     *prometheus.CounterVec

	internalRefusals *prometheus.CounterVec

	ocspFetches    *prometheus.CounterVec
	ocspStapled    *prometheus.GaugeVec
	ocspNextUpdate *prometheus.GaugeVec
	ocspRevoked    *prometheus.GaugeVec
}

// Reasons an order is refused, the values of the reason label of
// renewals_refused_total.
const (
	refusedDuplicate    = "duplicate_limit"
	refusedStaleARI     = "stale_ari"
	refusedOnDemandRate = "on_demand_rate"
)

// On-demand decisions, the values of the result label of
// on_demand_decisions_total.
const (
	decisionAllowed     = "allowed"
	decisionRefused     = "refused"
	decisionCapped      = "capped"
	decisionRateLimited = "rate_limited"
)

// Renewal results, the values of the result label of renewals_total.
const (
	resultSuccess = "success"
	resultError   = "error"
	resultRefused = "refused"
)

func newMetrics(reg prometheus.Registerer) *metrics {
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "outrider", Subsystem: "certs", Name: name, Help: help,
		}, labels)
	}
	m := &metrics{
		expiry: gauge("expiry_timestamp_seconds",
			"Time the served certificate for a name expires, in seconds since the Unix epoch.", "domain"),
		servedExpiry: gauge("served_expiry_timestamp_seconds",
			"Time the leaf that a handshake for a name got at the watchdog's last check expires, in seconds since the Unix epoch.", "domain"),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outrider", Subsystem: "certs", Name: "renewals_refused_total",
			Help: "Orders refused before reaching the CA, by reason: duplicate_limit (the duplicate-certificate guard), stale_ari (an ARI window older than the certificate), on_demand_rate.",
		}, []string{"reason"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outrider", Subsystem: "certs", Name: "reloads_total",
			Help: "Static certificate file loads by result (success or error).",
		}, []string{"result"}),
		renewalDue: gauge("renewal_due_timestamp_seconds",
			"Time the served certificate for a name is due for renewal by its expiry (ARI may move it earlier), in seconds since the Unix epoch.", "domain"),
		lastAttempt: gauge("last_renewal_attempt_timestamp_seconds",
			"Time of the last attempt to obtain or renew the certificate for a name, in seconds since the Unix epoch.", "domain"),
		lastSuccess: gauge("last_renewal_success",
			"1 if the last attempt to obtain or renew the certificate for a name succeeded, 0 if it failed or was refused.", "domain"),
		failures: gauge("consecutive_failures",
			"Failed or refused attempts to obtain or renew the certificate for a name since its last success.", "domain"),
		degraded: gauge("degraded",
			"1 when the certificate for a name needs an operator: missing, expired, within the warning window of expiry, or renewals keep failing.", "domain"),
		info: gauge("info",
			"Always 1; labels name the source (acme, internal, file) and the issuer of the certificate served for a name.", "domain", "source", "issuer"),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outrider", Subsystem: "certs", Name: "renewals_total",
			Help: "Certificate orders and renewals by result: success, error, or refused by the duplicate-certificate guard.",
		}, []string{"result"}),
		ledgerOrders: gauge("recent_orders",
			"Certificates obtained for a name in the last 7 days, as recorded in storage; the duplicate-certificate guard refuses orders beyond its limit.", "domain"),
		internalRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outrider", Subsystem: "certs", Name: "internal_refusals_total",
			Help: "Handshakes the internal CA gave no certificate, by reason: not_allowed (not among --domain), invalid_name, rate_limited (too many new names from one client address).",
		}, []string{"reason"}),
	}
	m.onDemand = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "outrider", Subsystem: "certs", Name: "on_demand_decisions_total",
		Help: "Handshakes for names outside --domain by on-demand decision: allowed or refused by the ask URL, capped by --on-demand-max-names, or an order rate_limited by --on-demand-rate.",
	}, []string{"result"})
	m.ocspFetches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "outrider", Subsystem: "certs", Name: "ocsp_fetches_total",
		Help: "OCSP responses fetched for static certificates that name a responder, by result: good, revoked, unknown (not stapled), error.",
	}, []string{"result"})
	m.ocspStapled = gauge("ocsp_stapled",
		"1 when handshakes for a name get a fresh stapled OCSP response, 0 when its static certificate names an OCSP responder but none is stapled.", "domain")
	m.ocspNextUpdate = gauge("ocsp_next_update_timestamp_seconds",
		"Time the OCSP response stapled for a name stops being served (its nextUpdate), in seconds since the Unix epoch.", "domain")
	m.ocspRevoked = gauge("ocsp_revoked",
		"1 when the OCSP response stapled for a name says its certificate is revoked.", "domain")
	for _, r := range []string{ocspResultGood, ocspResultRevoked, ocspResultUnknown, ocspResultError} {
		m.ocspFetches.WithLabelValues(r)
	}
	for _, r := range []string{decisionAllowed, decisionRefused, decisionCapped, decisionRateLimited} {
		m.onDemand.WithLabelValues(r)
	}
	for _, r := range []string{resultSuccess, resultError} {
		m.reloads.WithLabelValues(r)
	}
	for _, r := range []string{refusedDuplicate, refusedStaleARI, refusedOnDemandRate} {
		m.refused.WithLabelValues(r)
	}
	for _, r := range []string{resultSuccess, resultError, resultRefused} {
		m.renewals.WithLabelValues(r)
	}
	for _, r := range []string{refusedNotAllowed, refusedInvalid, refusedRateLimited} {
		m.internalRefusals.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.expiry, m.servedExpiry, m.refused, m.reloads, m.renewalDue, m.lastAttempt, m.lastSuccess,
			m.failures, m.degraded, m.info, m.renewals, m.ledgerOrders, m.onDemand, m.internalRefusals,
			m.ocspFetches, m.ocspStapled, m.ocspNextUpdate, m.ocspRevoked)
	}
	return m
}
