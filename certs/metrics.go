package certs

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the certs series. A nil Registerer leaves them unexported but
// still usable.
type metrics struct {
	expiry  *prometheus.GaugeVec
	reloads *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "outrider", Subsystem: "certs", Name: "expiry_timestamp_seconds",
			Help: "Time the served certificate for a name expires, in seconds since the Unix epoch.",
		}, []string{"domain"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "outrider", Subsystem: "certs", Name: "reloads_total",
			Help: "Static certificate file loads by result (success or error).",
		}, []string{"result"}),
	}
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("error")
	if reg != nil {
		reg.MustRegister(m.expiry, m.reloads)
	}
	return m
}
