package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// setMemoryLimit sets the Go soft memory limit (GOMEMLIMIT) to 90% of the
// cgroup's memory limit, so that the collector works harder as the pod nears
// its limit instead of the kernel OOM-killing the sidecar. An explicit
// GOMEMLIMIT in the environment wins, and without a cgroup limit nothing
// changes. Go sets GOMAXPROCS from the CPU quota itself (Go 1.25), but not
// this.
func setMemoryLimit(log *slog.Logger) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	limit, ok := cgroupMemoryLimit("/sys/fs/cgroup", "/proc/self/cgroup")
	if !ok {
		return
	}
	debug.SetMemoryLimit(limit / 10 * 9)
	log.Debug("memory limit from cgroup", "cgroup_limit_bytes", limit, "gomemlimit_bytes", limit/10*9)
}

// cgroupMemoryLimit reads this process's cgroup v2 memory.max (or v1
// memory.limit_in_bytes) under root. It reports false when there is no
// limit or it cannot be read.
func cgroupMemoryLimit(root, selfCgroup string) (int64, bool) {
	var candidates []string
	if b, err := os.ReadFile(selfCgroup); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			// "0::/path" on v2; "N:memory:/path" on v1.
			parts := strings.SplitN(line, ":", 3)
			if len(parts) != 3 {
				continue
			}
			switch {
			case parts[0] == "0" && parts[1] == "":
				candidates = append(candidates, filepath.Join(root, parts[2], "memory.max"))
			case strings.Contains(","+parts[1]+",", ",memory,"):
				candidates = append(candidates, filepath.Join(root, "memory", parts[2], "memory.limit_in_bytes"))
			}
		}
	}
	// Inside a container the cgroup namespace root is the container's own.
	candidates = append(candidates, filepath.Join(root, "memory.max"), filepath.Join(root, "memory", "memory.limit_in_bytes"))
	for _, p := range candidates {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0, false
		}
		n, err := strconv.ParseInt(s, 10, 64)
		// cgroup v1 reports "no limit" as a huge page-rounded number.
		if err != nil || n <= 0 || n >= 1<<62 {
			return 0, false
		}
		return n, true
	}
	return 0, false
}
