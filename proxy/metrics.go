package proxy

import (
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests         *prometheus.CounterVec
	duration         prometheus.Histogram
	upstreamDuration prometheus.Histogram
	upstreamErrors   *prometheus.CounterVec
	openConns        prometheus.Gauge
	handshakes       *prometheus.CounterVec
	handshakeOK      prometheus.Counter // handshakes{result="success"}, looked up once
	handshakeErr     prometheus.Counter
	resetCloses      prometheus.Counter
	retries          prometheus.Counter
	connsEvicted     prometheus.Counter
	emptyFrameCloses prometheus.Counter
	connsRefused     prometheus.Counter
	poolWaits        prometheus.Counter
	restartWait      *prometheus.CounterVec
	proxyProtocol    *prometheus.CounterVec
	quicRetries      prometheus.Counter
	quicRefused      prometheus.Counter
	reg              prometheus.Registerer

	// requestCounters caches requests' children for the common code,
	// method and protocol triples: WithLabelValues hashes every label and
	// takes a lock on every call. Filled on first use, so that no zero
	// series appears for a triple never seen.
	requestCounters [len(protoLabels)][len(commonCodes)][len(commonMethods)]atomic.Pointer[prometheus.Counter]
}

// The pairs cached by metrics.request. Anything else takes the slow path.
var (
	commonCodes   = [...]int{200, 204, 206, 301, 302, 304, 400, 401, 403, 404, 408, 421, 499, 500, 502, 503, 504}
	commonMethods = [...]string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions}
)

// protoLabels are the proto label's values, by HTTP major version - 1.
var protoLabels = [...]string{"http1", "http2", "http3"}

// protoIndex maps an HTTP major version to its protoLabels index.
func protoIndex(major int) int {
	return min(max(major, 1), len(protoLabels)) - 1
}

// request returns the requests counter for a status code, method and HTTP
// major version.
func (m *metrics) request(code int, method string, major int) prometheus.Counter {
	pi, ci, mi := protoIndex(major), -1, -1
	for i, c := range commonCodes {
		if c == code {
			ci = i
			break
		}
	}
	for i, v := range commonMethods {
		if v == method {
			mi = i
			break
		}
	}
	if ci < 0 || mi < 0 {
		return m.requests.WithLabelValues(codeLabel(code), methodLabel(method), protoLabels[pi])
	}
	slot := &m.requestCounters[pi][ci][mi]
	if c := slot.Load(); c != nil {
		return *c
	}
	c := m.requests.WithLabelValues(codeLabel(code), methodLabel(method), protoLabels[pi])
	slot.Store(&c)
	return c
}

// latencyBuckets span a fast local app (1 ms) to --upstream-timeout's
// default (60 s).
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

func newMetrics(reg prometheus.Registerer) *metrics {
	const ns, sub = "outrider", "proxy"
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "requests_total",
			Help: "Requests answered on the HTTPS listener, by status code, method and protocol (http1, http2, http3).",
		}, []string{"code", "method", "proto"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "request_duration_seconds",
			Help:    "Time from a request's headers to the end of its response, in seconds.",
			Buckets: latencyBuckets,
		}),
		upstreamDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "upstream_duration_seconds",
			Help:    "Time until the upstream's response headers arrived, in seconds.",
			Buckets: latencyBuckets,
		}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "upstream_errors_total",
			Help: "Failed upstream exchanges by reason: dial, timeout, canceled, client_timeout, client_body, protocol.",
		}, []string{"reason"}),
		openConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "open_connections",
			Help: "Client connections currently open on the HTTPS listener, TCP and QUIC (upgraded ones excluded).",
		}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "tls_handshakes_total",
			Help: "TLS handshakes on the HTTPS listener by result (success or error).",
		}, []string{"result"}),
		resetCloses: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "rapid_reset_closes_total",
			Help: "HTTP/2 connections closed for cancelling too many streams.",
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "upstream_retries_total",
			Help: "Requests sent again on a new connection after a kept-alive one turned out closed by the app.",
		}),
		poolWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "upstream_pool_waits_total",
			Help: "Requests that waited for a free upstream connection (--max-upstream-conns reached).",
		}),
		restartWait: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "upstream_restart_waits_total",
			Help: "Requests held while the app refused connections (--upstream-wait), by result: recovered, gave_up, refused (queue full).",
		}, []string{"result"}),
		connsEvicted: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "connections_evicted_total",
			Help: "Idle keep-alive client connections closed to make room for a new one at --max-conns.",
		}),
		emptyFrameCloses: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "empty_frame_closes_total",
			Help: "HTTP/2 connections closed for sending too many frames that carry nothing (CVE-2019-9518).",
		}),
		connsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "connections_refused_total",
			Help: "Client connections refused at --max-conns because none open was idle.",
		}),
		proxyProtocol: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "proxy_protocol_connections_total",
			Help: "Connections from --proxy-protocol-from peers and others by PROXY header result: used, absent (trusted peer, no header), refused (header from an untrusted peer), invalid.",
		}, []string{"result"}),
		quicRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "quic_retries_total",
			Help: "QUIC connection attempts answered with a Retry (address validation): too many new connections a second, or from one address.",
		}),
		quicRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "quic_refused_total",
			Help: "QUIC connections refused because their client address held too many already.",
		}),
		reg: reg,
	}
	for _, r := range []string{waitRecovered, waitGaveUp, waitRefused} {
		m.restartWait.WithLabelValues(r)
	}
	for _, r := range []string{reasonDial, reasonTimeout, reasonCanceled, reasonClientTimeout, reasonClientBody, reasonProtocol, reasonBusy} {
		m.upstreamErrors.WithLabelValues(r)
	}
	for _, r := range []string{ppUsed, ppAbsent, ppRefused, ppInvalid} {
		m.proxyProtocol.WithLabelValues(r)
	}
	m.handshakeOK = m.handshakes.WithLabelValues("success")
	m.handshakeErr = m.handshakes.WithLabelValues("error")
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.upstreamDuration, m.upstreamErrors, m.openConns, m.handshakes, m.resetCloses,
			m.retries, m.poolWaits, m.restartWait, m.connsEvicted, m.connsRefused, m.emptyFrameCloses, m.proxyProtocol,
			m.quicRetries, m.quicRefused)
	}
	return m
}

// Results of a wait for the app to listen again.
const (
	waitRecovered = "recovered"
	waitGaveUp    = "gave_up"
	waitRefused   = "refused"
)

func (m *metrics) restartWaits(result string) prometheus.Counter {
	return m.restartWait.WithLabelValues(result)
}

// watchPool exports the pool's gauges.
func (m *metrics) watchPool(p *pool) {
	if m.reg == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "outrider", Subsystem: "proxy", Name: "upstream_connections",
		Help: "Connections to the app now open, idle or in use.",
	}, func() float64 {
		p.mu.Lock()
		defer p.mu.Unlock()
		return float64(p.open)
	}), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "outrider", Subsystem: "proxy", Name: "upstream_waiting_requests",
		Help: "Requests now waiting for the app to listen again, or for a free connection to it.",
	}, func() float64 {
		p.mu.Lock()
		defer p.mu.Unlock()
		return float64(len(p.waiters)) + float64(p.waiting.Load())
	}))
}

// methodLabel bounds the method label to the registered methods.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "OTHER"
}

// codeLabel avoids an allocation for the common status codes.
func codeLabel(code int) string {
	switch code {
	case 200:
		return "200"
	case 204:
		return "204"
	case 301:
		return "301"
	case 302:
		return "302"
	case 304:
		return "304"
	case 404:
		return "404"
	case 502:
		return "502"
	case 504:
		return "504"
	}
	return strconv.Itoa(code)
}
