package topapi

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics exports the latest snapshot; a scrape reads it and never scans
// /proc. Per-process series exist only for the top N processes by CPU, so
// the pid/name label set stays bounded.
type metrics struct {
	s    *Sampler
	topN int

	sampleDuration prometheus.Histogram
	sampleErrors   prometheus.Counter

	cpuSeconds, cpuCount, cpuLimit, load1, load5, load15, boot *prometheus.Desc
	memLimit, memUsed, memTotal, memAvail, swapTotal, swapFree *prometheus.Desc
	processes, pressure, hostInfo                              *prometheus.Desc
	cgThrottled, cgThrottledPeriods, cgOOM                     *prometheus.Desc
	procCPU, procRSS, procThreads                              *prometheus.Desc
}

func newMetrics(s *Sampler, topN int) *metrics {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName("outrider", "top", name), help, labels, nil)
	}
	return &metrics{
		s:    s,
		topN: topN,
		sampleDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "outrider", Subsystem: "top", Name: "sample_duration_seconds",
			Help:    "Time taken by one /proc and cgroup sample, in seconds.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		sampleErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "outrider", Subsystem: "top", Name: "sample_errors_total",
			Help: "Samples that failed as a whole (a single vanished process is not an error).",
		}),
		hostInfo:           d("host_info", "Always 1; source is cgroup when CPU and memory figures are the container's, host otherwise.", "source"),
		cpuSeconds:         d("cpu_seconds_total", "CPU time used by the host or container (see outrider_top_host_info), in seconds over all CPUs."),
		cpuCount:           d("host_cpus", "Number of CPUs of the host."),
		cpuLimit:           d("cpu_limit_cores", "CPU available in cores: the cgroup quota in a container, else the number of CPUs."),
		load1:              d("host_load1", "Host load average over 1 minute."),
		load5:              d("host_load5", "Host load average over 5 minutes."),
		load15:             d("host_load15", "Host load average over 15 minutes."),
		boot:               d("host_boot_time_seconds", "Host boot time, in seconds since the Unix epoch."),
		memLimit:           d("memory_limit_bytes", "Memory available: the cgroup memory.max in a container, else host MemTotal, in bytes."),
		memUsed:            d("memory_used_bytes", "Memory used: cgroup memory.current in a container, else host MemTotal minus MemAvailable, in bytes."),
		memTotal:           d("host_memory_total_bytes", "Host MemTotal, in bytes."),
		memAvail:           d("host_memory_available_bytes", "Host MemAvailable, in bytes."),
		swapTotal:          d("host_swap_total_bytes", "Host swap size, in bytes."),
		swapFree:           d("host_swap_free_bytes", "Host free swap, in bytes."),
		processes:          d("processes", "Number of processes in scope."),
		pressure:           d("pressure_stall_seconds_total", "Pressure stall time (PSI) of the host or container, in seconds.", "resource", "kind"),
		cgThrottled:        d("cgroup_throttled_seconds_total", "Time the cgroup was throttled by its CPU quota, in seconds."),
		cgThrottledPeriods: d("cgroup_throttled_periods_total", "CPU quota periods in which the cgroup was throttled."),
		cgOOM:              d("cgroup_oom_kills_total", "Processes of the cgroup killed by the OOM killer."),
		procCPU:            d("process_cpu_seconds_total", "CPU time of one of the top N processes by CPU, in seconds.", "pid", "name"),
		procRSS:            d("process_resident_memory_bytes", "Resident memory of one of the top N processes by CPU, in bytes.", "pid", "name"),
		procThreads:        d("process_threads", "Threads of one of the top N processes by CPU.", "pid", "name"),
	}
}

func (m *metrics) observe(d time.Duration, err error) {
	m.sampleDuration.Observe(d.Seconds())
	if err != nil {
		m.sampleErrors.Inc()
	}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.sampleDuration.Describe(ch)
	m.sampleErrors.Describe(ch)
	for _, d := range []*prometheus.Desc{
		m.hostInfo, m.cpuSeconds, m.cpuCount, m.cpuLimit, m.load1, m.load5, m.load15, m.boot,
		m.memLimit, m.memUsed, m.memTotal, m.memAvail, m.swapTotal, m.swapFree,
		m.processes, m.pressure, m.cgThrottled, m.cgThrottledPeriods, m.cgOOM,
		m.procCPU, m.procRSS, m.procThreads,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.sampleDuration.Collect(ch)
	m.sampleErrors.Collect(ch)
	snap := m.s.Snapshot()
	if snap == nil {
		return
	}
	h := snap.Host
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	c := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	g(m.hostInfo, 1, h.Source)
	c(m.cpuSeconds, h.CPUSecondsTotal)
	g(m.cpuCount, float64(h.CPUCount))
	g(m.cpuLimit, h.CPULimitCores)
	g(m.load1, h.Load1)
	g(m.load5, h.Load5)
	g(m.load15, h.Load15)
	g(m.boot, float64(h.BootTime.Unix()))
	g(m.memLimit, float64(h.MemoryLimitBytes))
	g(m.memUsed, float64(h.MemoryUsedBytes))
	g(m.memTotal, float64(h.MemoryTotalBytes))
	g(m.memAvail, float64(h.MemoryAvailableBytes))
	g(m.swapTotal, float64(h.SwapTotalBytes))
	g(m.swapFree, float64(h.SwapFreeBytes))
	g(m.processes, float64(h.ProcessCount))
	if p := h.Pressure; p != nil {
		for _, r := range []struct {
			name string
			psi  *PSI
		}{{"cpu", p.CPU}, {"memory", p.Memory}, {"io", p.IO}} {
			if r.psi == nil {
				continue
			}
			if r.psi.Some != nil {
				c(m.pressure, r.psi.Some.StallSecondsTotal, r.name, "some")
			}
			if r.psi.Full != nil {
				c(m.pressure, r.psi.Full.StallSecondsTotal, r.name, "full")
			}
		}
	}
	if cg := h.Cgroup; cg != nil {
		c(m.cgThrottled, cg.ThrottledSecondsTotal)
		c(m.cgThrottledPeriods, float64(cg.ThrottledPeriodsTotal))
		c(m.cgOOM, float64(cg.OOMKillsTotal))
	}
	// Processes are stored busiest first.
	for i, p := range snap.Processes {
		if i >= m.topN {
			break
		}
		pid := strconv.Itoa(p.PID)
		c(m.procCPU, p.CPUSecondsTotal, pid, p.Name)
		g(m.procRSS, float64(p.RSSBytes), pid, p.Name)
		g(m.procThreads, float64(p.Threads), pid, p.Name)
	}
}
