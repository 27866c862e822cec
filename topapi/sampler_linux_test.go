package topapi

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fixture is a writable copy of testdata with a controllable clock.
type fixture struct {
	t    *testing.T
	proc string
	sys  string
	now  time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	copyTree(t, "testdata", dir)
	return &fixture{t: t, proc: filepath.Join(dir, "proc"), sys: filepath.Join(dir, "sys"),
		now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (f *fixture) config() Config {
	return Config{ProcRoot: f.proc, SysRoot: f.sys, Now: func() time.Time { return f.now }}
}

func (f *fixture) sampler(cfg Config) *Sampler {
	f.t.Helper()
	s, err := New(cfg)
	if err != nil {
		f.t.Fatalf("New: %v", err)
	}
	return s
}

// write replaces one file of the fixture, path relative to its root
// ("proc/100/stat").
func (f *fixture) write(path, content string) {
	f.t.Helper()
	if err := os.WriteFile(filepath.Join(filepath.Dir(f.proc), path), []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// statLine is a /proc/PID/stat line with the fields the sampler reads.
func statLine(pid int, comm, state string, ppid, utime, stime, threads, start, rss int) string {
	return fmt.Sprintf("%d (%s) %s %d %d %d 0 -1 4194304 96 0 0 0 %d %d 0 0 20 0 %d 0 %d 3133440 %d 18446744073709551615 1 1 1 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n",
		pid, comm, state, ppid, pid, pid, utime, stime, threads, start, rss)
}

// advance moves the fixture two seconds on: process 100 used 1 s of CPU,
// process 200 used 4 s (two cores), the cgroup 1.5 s, the host 1.5 s of 4 s.
func (f *fixture) advance() {
	f.now = f.now.Add(2 * time.Second)
	f.write("proc/100/stat", statLine(100, "app server", "S", 1, 1100, 200, 4, 300, 25600))
	f.write("proc/200/stat", statLine(200, "worker", "R", 100, 410, 0, 1, 400, 512))
	f.write("proc/stat", "cpu  1150 0 500 8250 100 0 0 0 0 0\ncpu0 575 0 250 4125 50 0 0 0 0 0\ncpu1 575 0 250 4125 50 0 0 0 0 0\nbtime 1700000000\n")
	if _, err := os.Stat(filepath.Join(f.sys, "fs/cgroup")); err != nil {
		return // a fixture without cgroup
	}
	f.write("sys/fs/cgroup/cpu.stat", "usage_usec 11500000\nnr_periods 120\nnr_throttled 6\nthrottled_usec 300000\n")
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		default:
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, 0o644)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

func twoSamples(t *testing.T, f *fixture, s *Sampler) *Snapshot {
	t.Helper()
	if err := s.Sample(); err != nil {
		t.Fatalf("first Sample: %v", err)
	}
	if s.Snapshot() != nil {
		t.Fatal("first sample published a snapshot; it should only set the CPU baseline")
	}
	f.advance()
	if err := s.Sample(); err != nil {
		t.Fatalf("second Sample: %v", err)
	}
	snap := s.Snapshot()
	if snap == nil {
		t.Fatal("no snapshot after two samples")
	}
	return snap
}

func TestSampleProcesses(t *testing.T) {
	f := newFixture(t)
	s := f.sampler(f.config())
	snap := twoSamples(t, f, s)
	boot := time.Unix(1700000000, 0).UTC()
	page := uint64(os.Getpagesize())
	want := []Process{
		{PID: 200, PPID: 100, User: "424242", Name: "worker", State: "R", CPUPercent: 200, CPUSecondsTotal: 4.1,
			RSSBytes: 512 * page, Threads: 1, StartTime: boot.Add(4 * time.Second),
			Cmdline: []string{"worker", "--token", "***", "postgres://app:***@db/x"}},
		{PID: 100, PPID: 1, User: "root", Name: "app server", State: "S", CPUPercent: 50, CPUSecondsTotal: 13,
			RSSBytes: 25600 * page, Threads: 4, StartTime: boot.Add(3 * time.Second),
			Cmdline: []string{"python3", "app.py", "--db-password=***", "--port", "8080"}},
		{PID: 1, PPID: 0, User: "root", Name: "init", State: "S", CPUSecondsTotal: 1.5,
			RSSBytes: 1000 * page, Threads: 1, StartTime: boot.Add(50 * time.Millisecond),
			Cmdline: []string{"/sbin/init"}},
		{PID: 300, PPID: 2, User: "root", Name: "kworker/0:1", State: "I", Threads: 1, StartTime: boot.Add(20 * time.Millisecond)},
	}
	if diff := cmp.Diff(want, snap.Processes); diff != "" {
		t.Errorf("processes (-want +got):\n%s", diff)
	}
	if snap.IntervalSeconds != 2 {
		t.Errorf("IntervalSeconds = %v, want 2", snap.IntervalSeconds)
	}
}

func TestSampleHostInContainer(t *testing.T) {
	f := newFixture(t)
	snap := twoSamples(t, f, f.sampler(f.config()))
	h := snap.Host
	quota, memMax, pct := 1.5, uint64(512<<20), 50.0
	psi := &PSI{Some: &PSILine{Avg10: 5, Avg60: 4, Avg300: 3, StallSecondsTotal: 2}, Full: &PSILine{Avg10: 1, Avg60: 0.5, Avg300: 0.25, StallSecondsTotal: 0.5}}
	want := Host{
		Hostname: "fixturehost", Source: "cgroup", CPUCount: 2, CPULimitCores: 1.5,
		CPUPercent: 50, CPUSecondsTotal: 11.5, Load1: 0.5, Load5: 0.4, Load15: 0.3,
		UptimeSeconds: h.UptimeSeconds, BootTime: time.Unix(1700000000, 0).UTC(),
		MemoryLimitBytes: memMax, MemoryUsedBytes: 100 << 20,
		MemoryTotalBytes: 8000000 * 1024, MemoryAvailableBytes: 6000000 * 1024,
		SwapTotalBytes: 1000000 * 1024, SwapFreeBytes: 500000 * 1024, ProcessCount: 4,
		Pressure: &Pressure{CPU: psi, Memory: psi, IO: psi},
		Cgroup: &Cgroup{
			Path: "/", CPUQuotaCores: &quota, CPUPeriodSeconds: 0.1, CPUUsageSecondsTotal: 11.5,
			CPUPercentOfQuota: &pct, PeriodsTotal: 120, ThrottledPeriodsTotal: 6, ThrottledSecondsTotal: 0.3,
			MemoryCurrentBytes: 100 << 20, MemoryMaxBytes: &memMax, OOMKillsTotal: 1,
			Pressure: &Pressure{CPU: psi, Memory: psi, IO: psi},
		},
	}
	if diff := cmp.Diff(want, h); diff != "" {
		t.Errorf("host (-want +got):\n%s", diff)
	}
}

func TestSampleHostWithoutCgroup(t *testing.T) {
	f := newFixture(t)
	os.RemoveAll(f.sys)
	os.Mkdir(f.sys, 0o755)
	h := twoSamples(t, f, f.sampler(f.config())).Host
	if h.Source != "host" || h.Cgroup != nil {
		t.Errorf("Source = %q, Cgroup = %v; want host, nil", h.Source, h.Cgroup)
	}
	// 150 busy ticks of 400 on the host.
	if h.CPUPercent != 37.5 || h.CPULimitCores != 2 || h.MemoryLimitBytes != 8000000*1024 || h.MemoryUsedBytes != 2000000*1024 {
		t.Errorf("host CPU %v%% of %v cores, memory %d of %d; want 37.5%% of 2, 2048000000 of 8192000000",
			h.CPUPercent, h.CPULimitCores, h.MemoryUsedBytes, h.MemoryLimitBytes)
	}
	if got := h.Pressure.CPU.Some.StallSecondsTotal; got != 1 {
		t.Errorf("host PSI cpu some total = %v s, want 1 (from /proc/pressure)", got)
	}
}

func TestSampleSkipsVanishedProcess(t *testing.T) {
	f := newFixture(t)
	s := f.sampler(f.config())
	if err := s.Sample(); err != nil {
		t.Fatal(err)
	}
	f.advance()
	// Process 1 exits between the directory listing and the stat read, and
	// process 400 appears without a readable status.
	os.Remove(filepath.Join(f.proc, "1/stat"))
	os.Mkdir(filepath.Join(f.proc, "400"), 0o755)
	f.write("proc/400/stat", statLine(400, "short", "R", 1, 1, 0, 1, 500, 1))
	if err := s.Sample(); err != nil {
		t.Fatalf("Sample with a vanished process: %v", err)
	}
	for _, p := range s.Snapshot().Processes {
		if p.PID == 1 || p.PID == 400 {
			t.Errorf("process %d listed; want it skipped", p.PID)
		}
	}
}

func TestStaticFactsReadOncePerProcess(t *testing.T) {
	f := newFixture(t)
	s := f.sampler(f.config())
	twoSamples(t, f, s)
	f.write("proc/100/cmdline", "changed\x00")
	f.now = f.now.Add(2 * time.Second)
	s.Sample()
	if got := cmdOf(s.Snapshot(), 100); got != "python3 app.py --db-password=*** --port 8080" {
		t.Errorf("cmdline after rewrite = %q; want the cached one", got)
	}
	// PID 100 reused by a new process: a new start time means new facts.
	f.write("proc/100/stat", statLine(100, "changed", "S", 1, 0, 0, 1, 900, 1))
	f.now = f.now.Add(2 * time.Second)
	s.Sample()
	if got := cmdOf(s.Snapshot(), 100); got != "changed" {
		t.Errorf("cmdline after PID reuse = %q, want %q", got, "changed")
	}
}

func cmdOf(s *Snapshot, pid int) string {
	for _, p := range s.Processes {
		if p.PID == pid {
			return strings.Join(p.Cmdline, " ")
		}
	}
	return "<absent>"
}

func TestScope(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "app.pid")
	os.WriteFile(pidfile, []byte("100\n"), 0o644)
	tests := []struct {
		name  string
		scope Scope
		want  []int
	}{
		{"host", Scope{}, []int{1, 100, 200, 300}},
		{"cgroup", Scope{Kind: ScopeCgroup}, []int{100, 200}},
		{"tree", Scope{Kind: ScopeTree, PID: 100}, []int{100, 200}},
		{"tree leaf", Scope{Kind: ScopeTree, PID: 200}, []int{200}},
		{"pidfile", Scope{Kind: ScopeTree, PIDFile: pidfile}, []int{100, 200}},
		{"pidfile missing", Scope{Kind: ScopeTree, PIDFile: pidfile + ".gone"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			cfg := f.config()
			cfg.Scope = tt.scope
			snap := twoSamples(t, f, f.sampler(cfg))
			var got []int
			for _, p := range snap.Processes {
				got = append(got, p.PID)
			}
			slices.Sort(got)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("scope %s PIDs (-want +got):\n%s", tt.scope, diff)
			}
			if snap.Host.ProcessCount != len(tt.want) {
				t.Errorf("ProcessCount = %d, want %d", snap.Host.ProcessCount, len(tt.want))
			}
		})
	}
}

func TestHideCmdline(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.HideCmdline = true
	for _, p := range twoSamples(t, f, f.sampler(cfg)).Processes {
		if p.Cmdline != nil {
			t.Errorf("process %d has cmdline %q with HideCmdline", p.PID, p.Cmdline)
		}
	}
}

func TestRunPublishesRealCPUFiguresFirst(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.Now = nil // real clock: Run's timing is what is under test
	s := f.sampler(cfg)
	ctx := t.Context()
	go s.Run(ctx)
	start := time.Now()
	snap, err := s.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("first snapshot after %v; want about 0.5s", took)
	}
	if snap.IntervalSeconds <= 0 {
		t.Errorf("first snapshot has IntervalSeconds %v; want the gap between two samples", snap.IntervalSeconds)
	}
}
