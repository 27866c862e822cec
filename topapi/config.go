package topapi

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Sampler. The zero value samples the whole host every
// two seconds from /proc and /sys.
type Config struct {
	// Interval is the sampling period; requests read the latest sample.
	// If zero, 2s. CPU percentages are averages over this period.
	Interval time.Duration
	// Scope selects the processes listed. The zero value is the whole host
	// (every process in outrider's PID namespace); see [ParseScope].
	Scope Scope
	// HideCmdline leaves command lines out of every answer (--cmdline=off).
	// Even when false, command lines are redacted with [Redact].
	HideCmdline bool
	// TopN bounds the per-process metric series: only the TopN processes by
	// CPU get outrider_top_process_* series (labelled pid and name), so the
	// label set stays bounded. If zero, 10; negative turns them off.
	TopN int

	// ProcRoot is where procfs is mounted. If empty, "/proc". Tests point it
	// at a fixture tree.
	ProcRoot string
	// SysRoot is where sysfs is mounted; cgroup v2 files are read from
	// SysRoot/fs/cgroup (or SysRoot/fs/cgroup/unified on hybrid hosts).
	// If empty, "/sys".
	SysRoot string
	// Now returns the current time. If nil, time.Now. Tests inject a clock
	// so CPU percentages are exact.
	Now func() time.Time

	// Logger receives warnings about unreadable files. If nil, logs are
	// discarded.
	Logger *slog.Logger
	// Registerer receives the outrider_top_* metrics. If nil, they are not
	// exported.
	Registerer prometheus.Registerer
}

func (c Config) withDefaults() Config {
	if c.Interval == 0 {
		c.Interval = 2 * time.Second
	}
	if c.TopN == 0 {
		c.TopN = 10
	}
	if c.ProcRoot == "" {
		c.ProcRoot = "/proc"
	}
	if c.SysRoot == "" {
		c.SysRoot = "/sys"
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("topapi: interval %s must not be negative", c.Interval))
	}
	if c.Interval > 0 && c.Interval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("topapi: interval %s is too short (at least 100ms)", c.Interval))
	}
	if c.Scope.Kind == ScopeTree && c.Scope.PID <= 0 && c.Scope.PIDFile == "" {
		errs = append(errs, fmt.Errorf("%w: tree needs a PID or a pidfile", ErrBadScope))
	}
	return errors.Join(errs...)
}

// ScopeKind says which processes a Sampler lists.
type ScopeKind int

const (
	// ScopeHost lists every process visible in /proc (the PID namespace).
	ScopeHost ScopeKind = iota
	// ScopeCgroup lists the processes in outrider's own cgroup v2 and its
	// descendants: the container, or the systemd unit.
	ScopeCgroup
	// ScopeTree lists one process and its descendants.
	ScopeTree
)

// Scope selects the processes a Sampler lists. Host figures (CPU, memory,
// load) are reported whatever the scope.
type Scope struct {
	Kind ScopeKind
	// PID is the root of the tree for ScopeTree.
	PID int
	// PIDFile, when set for ScopeTree, is re-read on every sample so the
	// tree follows the app across restarts.
	PIDFile string
}

// String returns the scope in the syntax ParseScope accepts.
func (s Scope) String() string {
	switch s.Kind {
	case ScopeCgroup:
		return "cgroup"
	case ScopeTree:
		if s.PIDFile != "" {
			return "tree=pidfile=" + s.PIDFile
		}
		return "tree=" + strconv.Itoa(s.PID)
	default:
		return "host"
	}
}

// ParseScope parses "host", "cgroup", "tree=PID" or "tree=pidfile=PATH"
// (also accepted: "pidfile=PATH").
func ParseScope(s string) (Scope, error) {
	switch {
	case s == "" || s == "host":
		return Scope{Kind: ScopeHost}, nil
	case s == "cgroup":
		return Scope{Kind: ScopeCgroup}, nil
	case strings.HasPrefix(s, "pidfile="), strings.HasPrefix(s, "tree=pidfile="):
		path := s[strings.Index(s, "pidfile=")+len("pidfile="):]
		if path == "" {
			return Scope{}, fmt.Errorf("%w %q: pidfile needs a path", ErrBadScope, s)
		}
		return Scope{Kind: ScopeTree, PIDFile: path}, nil
	case strings.HasPrefix(s, "tree="):
		pid, err := strconv.Atoi(strings.TrimPrefix(s, "tree="))
		if err != nil || pid <= 0 {
			return Scope{}, fmt.Errorf("%w %q: tree needs a positive PID", ErrBadScope, s)
		}
		return Scope{Kind: ScopeTree, PID: pid}, nil
	}
	return Scope{}, fmt.Errorf("%w %q: want host, cgroup, tree=PID or tree=pidfile=PATH", ErrBadScope, s)
}
