package topapi

import "time"

// Snapshot is one published sample. It is immutable once published and
// safe to share between goroutines.
type Snapshot struct {
	// Time is when the sample was taken.
	Time time.Time `json:"time"`
	// IntervalSeconds is the wall time between this sample and the previous
	// one: the period cpu_percent figures are averaged over.
	IntervalSeconds float64 `json:"interval_seconds"`
	// SampleDurationSeconds is how long the sample took to take.
	SampleDurationSeconds float64 `json:"sample_duration_seconds"`
	// Scope is the process selection, in ParseScope syntax.
	Scope string `json:"scope"`
	// Host holds machine-wide (or container-wide) figures.
	Host Host `json:"host"`
	// Processes are the processes in scope, busiest first.
	Processes []Process `json:"processes"`
}

// Host holds whole-machine or whole-container figures.
type Host struct {
	// Hostname is the kernel's host name (the container's, in a container).
	Hostname string `json:"hostname"`
	// Source is "cgroup" when the cpu_* and memory_* figures below are the
	// container's (cgroup v2), and "host" when they are the machine's.
	Source string `json:"source"`
	// CPUCount is the number of CPUs the kernel reports.
	CPUCount int `json:"cpu_count"`
	// CPULimitCores is the CPU available: the cgroup quota in cores when
	// Source is "cgroup" and a quota is set, else CPUCount.
	CPULimitCores float64 `json:"cpu_limit_cores"`
	// CPUPercent is the CPU used between the last two samples as a share of
	// CPULimitCores (0–100), like top's summary line.
	CPUPercent float64 `json:"cpu_percent"`
	// CPUSecondsTotal is the CPU time used since boot (host) or since the
	// cgroup was created (cgroup), in seconds over all CPUs.
	CPUSecondsTotal float64 `json:"cpu_seconds_total"`
	// Load1, Load5, Load15 are the host's load averages.
	Load1  float64 `json:"load1"`
	Load5  float64 `json:"load5"`
	Load15 float64 `json:"load15"`
	// UptimeSeconds is the host's time since boot.
	UptimeSeconds float64 `json:"uptime_seconds"`
	// BootTime is when the host booted.
	BootTime time.Time `json:"boot_time"`
	// MemoryLimitBytes is the memory available: memory.max when Source is
	// "cgroup" and a limit is set, else the host's MemTotal.
	MemoryLimitBytes uint64 `json:"memory_limit_bytes"`
	// MemoryUsedBytes is memory.current (cgroup) or MemTotal − MemAvailable
	// (host).
	MemoryUsedBytes uint64 `json:"memory_used_bytes"`
	// MemoryTotalBytes and MemoryAvailableBytes are the host's /proc/meminfo.
	MemoryTotalBytes     uint64 `json:"memory_total_bytes"`
	MemoryAvailableBytes uint64 `json:"memory_available_bytes"`
	// SwapTotalBytes and SwapFreeBytes are the host's swap.
	SwapTotalBytes uint64 `json:"swap_total_bytes"`
	SwapFreeBytes  uint64 `json:"swap_free_bytes"`
	// ProcessCount is the number of processes in scope.
	ProcessCount int `json:"process_count"`
	// Pressure is the pressure stall information (PSI) of the source: the
	// cgroup's *.pressure files or /proc/pressure/*. Absent when the kernel
	// offers none.
	Pressure *Pressure `json:"pressure,omitempty"`
	// Cgroup holds the raw cgroup v2 figures; absent outside a cgroup v2
	// container.
	Cgroup *Cgroup `json:"cgroup,omitempty"`
}

// Cgroup is outrider's own cgroup v2, as read from its interface files.
type Cgroup struct {
	// Path is the cgroup's path below the cgroup2 mount ("/" inside a
	// container with its own cgroup namespace).
	Path string `json:"path"`
	// CPUQuotaCores is cpu.max's quota divided by its period; null when
	// unlimited ("max").
	CPUQuotaCores *float64 `json:"cpu_quota_cores"`
	// CPUPeriodSeconds is cpu.max's period.
	CPUPeriodSeconds float64 `json:"cpu_period_seconds,omitempty"`
	// CPUUsageSecondsTotal is cpu.stat usage_usec, in seconds.
	CPUUsageSecondsTotal float64 `json:"cpu_usage_seconds_total"`
	// CPUPercentOfQuota is the CPU used between the last two samples as a
	// share of the quota; null when unlimited.
	CPUPercentOfQuota *float64 `json:"cpu_percent_of_quota"`
	// PeriodsTotal, ThrottledPeriodsTotal and ThrottledSecondsTotal are
	// cpu.stat's nr_periods, nr_throttled and throttled_usec.
	PeriodsTotal          uint64  `json:"periods_total"`
	ThrottledPeriodsTotal uint64  `json:"throttled_periods_total"`
	ThrottledSecondsTotal float64 `json:"throttled_seconds_total"`
	// MemoryCurrentBytes is memory.current.
	MemoryCurrentBytes uint64 `json:"memory_current_bytes"`
	// MemoryMaxBytes is memory.max; null when unlimited.
	MemoryMaxBytes *uint64 `json:"memory_max_bytes"`
	// OOMKillsTotal is memory.events oom_kill.
	OOMKillsTotal uint64 `json:"oom_kills_total"`
	// Pressure is the cgroup's PSI, when the kernel offers it.
	Pressure *Pressure `json:"pressure,omitempty"`
}

// Pressure is pressure stall information for CPU, memory and I/O. A nil
// resource was not offered by the kernel.
type Pressure struct {
	CPU    *PSI `json:"cpu,omitempty"`
	Memory *PSI `json:"memory,omitempty"`
	IO     *PSI `json:"io,omitempty"`
}

// PSI is one resource's pressure: "some" (at least one task stalled) and
// "full" (all non-idle tasks stalled). Full is nil where the kernel reports
// no full line (CPU on older kernels).
type PSI struct {
	Some *PSILine `json:"some,omitempty"`
	Full *PSILine `json:"full,omitempty"`
}

// PSILine holds the stall averages in percent and the total stall time.
type PSILine struct {
	Avg10             float64 `json:"avg10"`
	Avg60             float64 `json:"avg60"`
	Avg300            float64 `json:"avg300"`
	StallSecondsTotal float64 `json:"stall_seconds_total"`
}

// Process is one process in a Snapshot.
type Process struct {
	PID  int `json:"pid"`
	PPID int `json:"ppid"`
	// User is the effective user's name, or the numeric UID when it has no
	// name.
	User string `json:"user"`
	// Name is the kernel's short command name (comm, at most 15 bytes).
	Name string `json:"name"`
	// State is the one-letter state: R running, S sleeping, D disk wait,
	// Z zombie, T stopped, I idle.
	State string `json:"state"`
	// CPUPercent is the CPU used between the last two samples; 100 is one
	// full core, so a multi-threaded process can exceed 100.
	CPUPercent float64 `json:"cpu_percent"`
	// CPUSecondsTotal is the user+system CPU time since the process started.
	CPUSecondsTotal float64 `json:"cpu_seconds_total"`
	// RSSBytes is the resident set size.
	RSSBytes uint64 `json:"rss_bytes"`
	// Threads is the number of threads.
	Threads int `json:"threads"`
	// StartTime is when the process started.
	StartTime time.Time `json:"start_time"`
	// Cmdline is the redacted command line, one element per argument;
	// absent for kernel threads and when command lines are turned off.
	Cmdline []string `json:"cmdline,omitempty"`
}
