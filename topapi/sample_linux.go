package topapi

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/procfs"
)

// userHZ is the kernel's clock-tick rate for /proc/PID/stat times; it is 100
// on every platform Go supports (procfs hard-codes it too).
const userHZ = 100

// procKey identifies one process across samples: a PID may be reused, a
// (PID, start time) pair is not.
type procKey struct {
	pid   int
	start uint64 // clock ticks after boot
}

// static holds what is read once per process.
type static struct {
	user      string
	cmdline   []string
	startTime time.Time
	gen       uint64 // last sample that saw the process
}

// scanner holds the state carried between samples. Only Sampler.Sample
// calls it, never concurrently.
type scanner struct {
	cfg      Config
	fs       procfs.FS
	cg       *cgroupReader // nil outside cgroup v2
	pageSize uint64

	gen      uint64
	statics  map[procKey]*static
	prevCPU  map[procKey]float64
	nextCPU  map[procKey]float64
	prevTime time.Time
	prevHost cpuTimes
	prevCg   float64 // cgroup usage seconds
	users    map[uint64]string
}

type cpuTimes struct{ busy, total float64 }

func newScanner(cfg Config) (*scanner, error) {
	fs, err := procfs.NewFS(cfg.ProcRoot)
	if err != nil {
		return nil, fmt.Errorf("opening procfs at %q: %w", cfg.ProcRoot, err)
	}
	cg, err := newCgroupReader(cfg.ProcRoot, cfg.SysRoot)
	if err != nil {
		cfg.Logger.Warn("cgroup v2 not readable; reporting host figures", "err", err)
		cg = nil
	}
	if cfg.Scope.Kind == ScopeCgroup && cg == nil {
		return nil, fmt.Errorf("%w: cgroup: no cgroup v2 found for this process", ErrBadScope)
	}
	return &scanner{
		cfg:      cfg,
		fs:       fs,
		cg:       cg,
		pageSize: uint64(os.Getpagesize()),
		statics:  map[procKey]*static{},
		prevCPU:  map[procKey]float64{},
		nextCPU:  map[procKey]float64{},
		users:    map[uint64]string{},
	}, nil
}

// sample reads everything once. It returns a nil snapshot for the very
// first sample, which only sets the baseline for CPU percentages.
func (sc *scanner) sample() (*Snapshot, error) {
	now := sc.cfg.Now()
	sc.gen++
	stat, err := sc.fs.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading %s/stat: %w", sc.cfg.ProcRoot, err)
	}
	bootTime := time.Unix(int64(stat.BootTime), 0)
	host := sc.host(stat, now, bootTime)

	var cgStat *cgroupStat
	if sc.cg != nil {
		cs, err := sc.cg.read()
		if err != nil {
			sc.cfg.Logger.Debug("reading cgroup", "err", err)
		} else {
			cgStat = &cs
		}
	}

	procs, err := sc.processes(now, bootTime)
	if err != nil {
		return nil, err
	}

	first := sc.prevTime.IsZero()
	interval := now.Sub(sc.prevTime).Seconds()
	hostTimes := cpuTimes{busy: busy(stat.CPUTotal), total: total(stat.CPUTotal)}
	if !first && interval > 0 {
		if dt := hostTimes.total - sc.prevHost.total; dt > 0 {
			host.CPUPercent = round2(100 * (hostTimes.busy - sc.prevHost.busy) / dt)
		}
	}
	if cgStat != nil {
		sc.applyCgroup(&host, cgStat, first, interval)
	}
	sc.prevHost = hostTimes
	sc.prevTime = now
	host.ProcessCount = len(procs)
	if first {
		return nil, nil
	}
	slices.SortStableFunc(procs, byCPU)
	return &Snapshot{
		Time:            now,
		IntervalSeconds: round2(interval),
		Scope:           sc.cfg.Scope.String(),
		Host:            host,
		Processes:       procs,
	}, nil
}

// host fills the host-wide figures.
func (sc *scanner) host(stat procfs.Stat, now, bootTime time.Time) Host {
	h := Host{
		Source:          "host",
		CPUCount:        len(stat.CPU),
		CPUSecondsTotal: round2(busy(stat.CPUTotal)),
		BootTime:        bootTime.UTC(),
		UptimeSeconds:   math.Round(now.Sub(bootTime).Seconds()),
	}
	h.CPULimitCores = float64(h.CPUCount)
	if b, err := os.ReadFile(filepath.Join(sc.cfg.ProcRoot, "sys/kernel/hostname")); err == nil {
		h.Hostname = strings.TrimSpace(string(b))
	}
	if la, err := sc.fs.LoadAvg(); err == nil {
		h.Load1, h.Load5, h.Load15 = la.Load1, la.Load5, la.Load15
	}
	if mi, err := sc.fs.Meminfo(); err == nil {
		h.MemoryTotalBytes = deref(mi.MemTotalBytes)
		h.MemoryAvailableBytes = deref(mi.MemAvailableBytes)
		h.SwapTotalBytes = deref(mi.SwapTotalBytes)
		h.SwapFreeBytes = deref(mi.SwapFreeBytes)
		h.MemoryLimitBytes = h.MemoryTotalBytes
		if h.MemoryTotalBytes > h.MemoryAvailableBytes {
			h.MemoryUsedBytes = h.MemoryTotalBytes - h.MemoryAvailableBytes
		}
	}
	var p Pressure
	for _, r := range []struct {
		name string
		dst  **PSI
	}{{"cpu", &p.CPU}, {"memory", &p.Memory}, {"io", &p.IO}} {
		if st, err := sc.fs.PSIStatsForResource(r.name); err == nil {
			*r.dst = &PSI{Some: psiLine(st.Some), Full: psiLine(st.Full)}
		}
	}
	if p != (Pressure{}) {
		h.Pressure = &p
	}
	return h
}

// applyCgroup attaches the cgroup figures and, inside a container, makes
// them the host object's CPU and memory figures.
func (sc *scanner) applyCgroup(h *Host, cs *cgroupStat, first bool, interval float64) {
	cg := cs.Cgroup
	if !first && interval > 0 && cs.usage >= sc.prevCg {
		cores := (cs.usage - sc.prevCg) / interval
		if cg.CPUQuotaCores != nil && *cg.CPUQuotaCores > 0 {
			pct := round2(100 * cores / *cg.CPUQuotaCores)
			cg.CPUPercentOfQuota = &pct
		}
		if cs.container {
			limit := float64(h.CPUCount)
			if cg.CPUQuotaCores != nil && *cg.CPUQuotaCores < limit {
				limit = *cg.CPUQuotaCores
			}
			if limit > 0 {
				h.CPUPercent = round2(100 * cores / limit)
			}
		}
	}
	sc.prevCg = cs.usage
	if !cs.nonRoot {
		return
	}
	h.Cgroup = &cg
	if !cs.container {
		return
	}
	h.Source = "cgroup"
	h.CPUSecondsTotal = cg.CPUUsageSecondsTotal
	if cg.CPUQuotaCores != nil && *cg.CPUQuotaCores < h.CPULimitCores {
		h.CPULimitCores = *cg.CPUQuotaCores
	}
	h.MemoryUsedBytes = cg.MemoryCurrentBytes
	if cg.MemoryMaxBytes != nil && *cg.MemoryMaxBytes < h.MemoryLimitBytes {
		h.MemoryLimitBytes = *cg.MemoryMaxBytes
	}
	if cg.Pressure != nil {
		h.Pressure = cg.Pressure
	}
}

// processes reads /proc/PID/stat for every process in scope, and the static
// facts of processes not seen before. A process that exits mid-scan (any
// read error) is skipped.
func (sc *scanner) processes(now, bootTime time.Time) ([]Process, error) {
	all, err := sc.fs.AllProcs()
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", sc.cfg.ProcRoot, err)
	}
	var inCgroup map[int]bool
	if sc.cfg.Scope.Kind == ScopeCgroup {
		inCgroup = sc.cg.pids()
	}
	interval := now.Sub(sc.prevTime).Seconds()
	out := make([]Process, 0, len(all))
	clear(sc.nextCPU)
	for _, p := range all {
		if inCgroup != nil && !inCgroup[p.PID] {
			continue
		}
		st, err := p.Stat()
		if err != nil {
			continue
		}
		key := procKey{p.PID, st.Starttime}
		s := sc.statics[key]
		if s == nil {
			if s, err = sc.readStatic(p, st, bootTime); err != nil {
				continue
			}
			sc.statics[key] = s
		}
		s.gen = sc.gen
		cpu := st.CPUTime()
		sc.nextCPU[key] = cpu
		var pct float64
		if interval > 0 && !sc.prevTime.IsZero() {
			if prev, ok := sc.prevCPU[key]; ok {
				pct = (cpu - prev) / interval * 100
			} else if s.startTime.After(sc.prevTime) {
				// Started since the last sample: all its CPU time is new.
				pct = cpu / interval * 100
			}
		}
		out = append(out, Process{
			PID:             p.PID,
			PPID:            st.PPID,
			User:            s.user,
			Name:            st.Comm,
			State:           st.State,
			CPUPercent:      round2(max(pct, 0)),
			CPUSecondsTotal: round2(cpu),
			RSSBytes:        uint64(max(st.RSS, 0)) * sc.pageSize,
			Threads:         st.NumThreads,
			StartTime:       s.startTime,
			Cmdline:         s.cmdline,
		})
	}
	sc.prevCPU, sc.nextCPU = sc.nextCPU, sc.prevCPU
	for k, s := range sc.statics {
		if s.gen != sc.gen {
			delete(sc.statics, k)
		}
	}
	if sc.cfg.Scope.Kind == ScopeTree {
		out = sc.tree(out)
	}
	return out, nil
}

func (sc *scanner) readStatic(p procfs.Proc, st procfs.ProcStat, bootTime time.Time) (*static, error) {
	s := &static{
		startTime: bootTime.Add(time.Duration(st.Starttime) * time.Second / userHZ).UTC(),
	}
	status, err := p.NewStatus()
	if err != nil {
		return nil, err
	}
	s.user = sc.userName(status.UIDs[1])
	if !sc.cfg.HideCmdline {
		args, err := p.CmdLine()
		if err != nil {
			return nil, err
		}
		if len(args) > 0 {
			s.cmdline = Redact(args)
		}
	}
	return s, nil
}

// userName returns the name of a UID, or the number when it has none.
// Lookups are cached for the sampler's life.
func (sc *scanner) userName(uid uint64) string {
	if n, ok := sc.users[uid]; ok {
		return n
	}
	id := strconv.FormatUint(uid, 10)
	n := id
	if u, err := user.LookupId(id); err == nil {
		n = u.Username
	}
	sc.users[uid] = n
	return n
}

// tree keeps the scope's root process and its descendants.
func (sc *scanner) tree(procs []Process) []Process {
	root := sc.cfg.Scope.PID
	if f := sc.cfg.Scope.PIDFile; f != "" {
		b, err := os.ReadFile(f)
		if err == nil {
			root, err = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		if err != nil || root <= 0 {
			sc.cfg.Logger.Debug("reading pidfile", "file", f, "err", err)
			return procs[:0]
		}
	}
	children := map[int][]int{}
	for _, p := range procs {
		children[p.PPID] = append(children[p.PPID], p.PID)
	}
	keep := map[int]bool{}
	stack := []int{root}
	for len(stack) > 0 {
		pid := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if keep[pid] {
			continue
		}
		keep[pid] = true
		stack = append(stack, children[pid]...)
	}
	return slices.DeleteFunc(procs, func(p Process) bool { return !keep[p.PID] })
}

func busy(c procfs.CPUStat) float64 {
	return c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ + c.Steal
}

func total(c procfs.CPUStat) float64 { return busy(c) + c.Idle + c.Iowait }

func psiLine(l *procfs.PSILine) *PSILine {
	if l == nil {
		return nil
	}
	return &PSILine{Avg10: l.Avg10, Avg60: l.Avg60, Avg300: l.Avg300, StallSecondsTotal: float64(l.Total) / 1e6}
}

func deref(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }

// byCPU orders busiest first, then by PID.
func byCPU(a, b Process) int {
	if a.CPUPercent != b.CPUPercent {
		if a.CPUPercent > b.CPUPercent {
			return -1
		}
		return 1
	}
	return a.PID - b.PID
}

// bytesTrim is strings.TrimSpace for file contents.
func bytesTrim(b []byte) string { return string(bytes.TrimSpace(b)) }
