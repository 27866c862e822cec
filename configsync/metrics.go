package configsync

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Sync results, the values of the result label of syncs_total.
const (
	ResultApplied        = "applied"         // a new version is live and healthy
	ResultUnchanged      = "unchanged"       // fetched content equals the live version
	ResultNotModified    = "not_modified"    // the source answered 304 or the same hash
	ResultFetchFailed    = "fetch_failed"    // source unreachable or answered an error
	ResultInvalid        = "invalid"         // empty, truncated, unparsable or unsafe answer
	ResultValidateFailed = "validate_failed" // --validate refused the staged version
	ResultApplyFailed    = "apply_failed"    // staging or swapping failed; old version kept
	ResultNotifyFailed   = "notify_failed"   // the app could not be told; rolled back
	ResultRolledBack     = "rolled_back"     // the app was unhealthy; previous version restored
	ResultUnhealthy      = "unhealthy"       // the app was unhealthy and there was no previous version
)

type metrics struct {
	syncs         *prometheus.CounterVec
	stageDuration *prometheus.HistogramVec
	stageResults  *prometheus.CounterVec
	notifications *prometheus.CounterVec
	rollbacks     prometheus.Counter
	drift         *prometheus.CounterVec
	versionInfo   *prometheus.GaugeVec
	files         prometheus.Gauge
	lastSuccess   prometheus.Gauge
	lastAttempt   prometheus.Gauge
	appliedAt     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "outrider", "configsync"
	m := &metrics{
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "syncs_total",
			Help: "Sync attempts by result: applied, unchanged, not_modified, fetch_failed, invalid, validate_failed, apply_failed, notify_failed, rolled_back, unhealthy.",
		}, []string{"result"}),
		stageDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "stage_duration_seconds",
			Help:    "Time spent in each stage: fetch, validate, apply, notify, health, rollback.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"stage"}),
		stageResults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "stage_results_total",
			Help: "Outcomes of each stage (fetch, validate, apply, notify, health, rollback) by result: ok, not_modified or error.",
		}, []string{"stage", "result"}),
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "notifications_total",
			Help: "Reload notifications sent to the app by kind (signal, http, exec) and result (ok, error).",
		}, []string{"kind", "result"}),
		rollbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "rollbacks_total",
			Help: "Times the previous version was put back because the app failed to reload or turned unhealthy.",
		}),
		drift: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "drift_detected_total",
			Help: "Times the files in the directory no longer matched the applied version, by action (restored, reported).",
		}, []string{"action"}),
		versionInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "applied_version_info",
			Help: "Always 1, for the version currently live; labels carry its version and the first 12 hex digits of its content hash.",
		}, []string{"version", "hash"}),
		files: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "applied_files",
			Help: "Number of files in the live version.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "last_success_timestamp_seconds",
			Help: "Unix time of the last sync that ended with the desired version live (applied, unchanged or not modified).",
		}),
		lastAttempt: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "last_sync_timestamp_seconds",
			Help: "Unix time of the last sync attempt, whatever its result.",
		}),
		appliedAt: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "applied_timestamp_seconds",
			Help: "Unix time the live version went live.",
		}),
	}
	for _, c := range []prometheus.Collector{m.syncs, m.stageDuration, m.stageResults, m.notifications, m.rollbacks, m.drift, m.versionInfo, m.files, m.lastSuccess, m.lastAttempt, m.appliedAt} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Pre-create the bounded label sets so rates work from the first scrape.
	for _, r := range []string{ResultApplied, ResultUnchanged, ResultNotModified, ResultFetchFailed, ResultInvalid, ResultValidateFailed, ResultApplyFailed, ResultNotifyFailed, ResultRolledBack, ResultUnhealthy} {
		m.syncs.WithLabelValues(r)
	}
	m.drift.WithLabelValues("restored")
	m.drift.WithLabelValues("reported")
	return m, nil
}

// stage records one stage's duration and result.
func (m *metrics) stage(name string, start time.Time, err error) {
	m.stageDuration.WithLabelValues(name).Observe(time.Since(start).Seconds())
	m.stageResults.WithLabelValues(name, stageResult(err)).Inc()
}

func stageResult(err error) string {
	switch {
	case err == nil:
		return "ok"
	case err == ErrNotModified:
		return "not_modified"
	}
	return "error"
}

func (m *metrics) setVersion(snap *Snapshot, at time.Time) {
	m.versionInfo.Reset()
	if snap == nil {
		m.files.Set(0)
		return
	}
	m.versionInfo.WithLabelValues(snap.DisplayVersion(), snap.Hash()[:12]).Set(1)
	m.files.Set(float64(len(snap.Files)))
	m.appliedAt.Set(float64(at.UnixNano()) / 1e9)
}
