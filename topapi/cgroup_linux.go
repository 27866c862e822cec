package topapi

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// cgroupReader reads the cgroup v2 interface files of outrider's own
// cgroup. procfs has no cgroup v2 support, hence this file.
type cgroupReader struct {
	path string // as in /proc/self/cgroup, e.g. "/" or "/system.slice/x.service"
	dir  string // the directory on disk
}

// cgroupStat is one reading.
type cgroupStat struct {
	Cgroup
	usage float64 // CPU seconds, unrounded
	// container reports whether the figures describe a container: the cgroup
	// is not the root one and either is the root of a cgroup namespace (the
	// usual container setup) or has a CPU or memory limit. A plain systemd
	// unit without limits on a host is not a container.
	container bool
	// nonRoot reports whether the cgroup is not the hierarchy's root (the
	// root has no cpu.max or memory.max, and no figures of its own).
	nonRoot bool
}

// newCgroupReader finds this process's cgroup v2 directory: the "0::" line
// of /proc/self/cgroup below the cgroup2 mount, which is SysRoot/fs/cgroup
// (unified hosts) or SysRoot/fs/cgroup/unified (hybrid hosts).
func newCgroupReader(procRoot, sysRoot string) (*cgroupReader, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, "self/cgroup"))
	if err != nil {
		return nil, fmt.Errorf("reading own cgroup: %w", err)
	}
	path := ""
	for line := range strings.Lines(string(b)) {
		if p, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok {
			path = p
		}
	}
	if path == "" {
		return nil, errors.New("no cgroup v2 entry in /proc/self/cgroup")
	}
	var mount string
	for _, m := range []string{"fs/cgroup", "fs/cgroup/unified"} {
		m = filepath.Join(sysRoot, m)
		if _, err := os.Stat(filepath.Join(m, "cgroup.controllers")); err == nil {
			mount = m
			break
		}
	}
	if mount == "" {
		return nil, fmt.Errorf("no cgroup2 mount below %s", sysRoot)
	}
	dir := mount
	if !strings.HasPrefix(path, "/..") { // outside our cgroup namespace: use its root
		dir = filepath.Join(mount, filepath.Clean("/"+path))
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("opening own cgroup: %w", err)
	}
	return &cgroupReader{path: path, dir: dir}, nil
}

func (r *cgroupReader) read() (cgroupStat, error) {
	var cs cgroupStat
	cs.Path = r.path
	stat, err := readKeyValues(filepath.Join(r.dir, "cpu.stat"))
	if err != nil {
		return cs, err
	}
	cs.usage = float64(stat["usage_usec"]) / 1e6
	cs.CPUUsageSecondsTotal = round2(cs.usage)
	cs.PeriodsTotal = stat["nr_periods"]
	cs.ThrottledPeriodsTotal = stat["nr_throttled"]
	cs.ThrottledSecondsTotal = float64(stat["throttled_usec"]) / 1e6

	nonRoot := false
	if b, err := os.ReadFile(filepath.Join(r.dir, "cpu.max")); err == nil {
		nonRoot = true
		f := strings.Fields(string(b))
		if len(f) == 2 {
			period, perr := strconv.ParseFloat(f[1], 64)
			if perr == nil && period > 0 {
				cs.CPUPeriodSeconds = period / 1e6
				if quota, err := strconv.ParseFloat(f[0], 64); err == nil {
					cores := round2(quota / period)
					cs.CPUQuotaCores = &cores
				}
			}
		}
	}
	if v, err := readUint(filepath.Join(r.dir, "memory.current")); err == nil {
		cs.MemoryCurrentBytes = v
	}
	if b, err := os.ReadFile(filepath.Join(r.dir, "memory.max")); err == nil {
		nonRoot = true
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
			cs.MemoryMaxBytes = &v
		}
	}
	if ev, err := readKeyValues(filepath.Join(r.dir, "memory.events")); err == nil {
		cs.OOMKillsTotal = ev["oom_kill"]
	}
	var p Pressure
	for _, res := range []struct {
		name string
		dst  **PSI
	}{{"cpu", &p.CPU}, {"memory", &p.Memory}, {"io", &p.IO}} {
		if psi, err := readPSI(filepath.Join(r.dir, res.name+".pressure")); err == nil {
			*res.dst = psi
		}
	}
	if p != (Pressure{}) {
		cs.Pressure = &p
	}
	cs.nonRoot = nonRoot
	cs.container = nonRoot && (r.path == "/" || cs.CPUQuotaCores != nil || cs.MemoryMaxBytes != nil)
	return cs, nil
}

// pids returns the processes in the cgroup and its descendants.
func (r *cgroupReader) pids() map[int]bool {
	out := map[int]bool{}
	filepath.WalkDir(r.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil // a cgroup removed mid-walk: skip it
		}
		b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for f := range strings.FieldsSeq(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				out[pid] = true
			}
		}
		return nil
	})
	return out
}

// readKeyValues reads a flat-keyed file such as cpu.stat or memory.events.
func readKeyValues(path string) (map[string]uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
			out[k] = n
		}
	}
	return out, sc.Err()
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(bytesTrim(b), 10, 64)
}

// readPSI parses a *.pressure file:
//
//	some avg10=0.00 avg60=0.00 avg300=0.00 total=0
//	full avg10=0.00 avg60=0.00 avg300=0.00 total=0
func readPSI(path string) (*PSI, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var psi PSI
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) != 5 {
			continue
		}
		var l PSILine
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, fmt.Errorf("parsing %s: bad value %q", path, kv)
			}
			switch k {
			case "avg10":
				l.Avg10 = n
			case "avg60":
				l.Avg60 = n
			case "avg300":
				l.Avg300 = n
			case "total":
				l.StallSecondsTotal = n / 1e6
			}
		}
		switch f[0] {
		case "some":
			psi.Some = &l
		case "full":
			psi.Full = &l
		}
	}
	if psi.Some == nil && psi.Full == nil {
		return nil, fmt.Errorf("parsing %s: no some/full line", path)
	}
	return &psi, nil
}
