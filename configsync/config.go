package configsync

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/outrider-dev/outrider/internal/etcdclient"
	"github.com/prometheus/client_golang/prometheus"
)

// Drift actions for Config.OnDrift.
const (
	DriftRestore = "restore" // put the applied version back and notify
	DriftReport  = "report"  // log and count only
	DriftOff     = "off"     // do not check
)

// Config configures a [Syncer]. It is plain data; [New] fills defaults and
// calls [Config.Validate].
type Config struct {
	// Source is where the config lives: http(s)://…, dir:///path, or
	// etcd://host:2379/prefix (see [OpenSource]). Required.
	Source string
	// File turns an http source into single-file mode: the response body is
	// the content of the file named File. Empty means JSON bundle mode:
	// {"version": "…", "files": {"relative/path": "content" | {"content": "…", "mode": "0600"}}}.
	File string
	// TokenFile holds a bearer token sent to http sources; it is re-read on
	// every fetch so it can be rotated. Empty sends no Authorization header.
	TokenFile string
	// Dir is the directory shared with the app. Required; created if missing.
	Dir string
	// StateDir keeps the last KeepVersions good versions; the newest is
	// restored at start, and rollback can go back through the others. It
	// must not be inside Dir, nor lead into it through a symlink. Empty keeps
	// no state across restarts.
	StateDir string
	// KeepVersions is how many applied versions StateDir keeps. Zero means
	// 5; negative is invalid.
	KeepVersions int
	// Interval is the poll period of http sources and the rescan period of
	// dir sources. Polls get ±10% jitter; errors back off exponentially from
	// min(Interval, 1s) up to 8×Interval (at most 5m). Zero means 30s.
	Interval time.Duration
	// Debounce is how long a burst of changes must be quiet before one apply
	// (at most 10×Debounce after the first change). Zero means 1s.
	Debounce time.Duration
	// ValidateCommand is a command run on each staged version before it goes live;
	// "{dir}" in it is replaced by the staging directory. It is split into
	// words like a shell would (quotes, backslashes) but no shell runs it.
	// A non-zero exit rejects the version. Empty skips validation.
	ValidateCommand string
	// Notify lists how to tell the app to reload, each run in order after a
	// version goes live (see [ParseNotifier] for the syntax).
	Notify []string
	// HealthURL, when set, must answer 2xx within HealthTimeout after the
	// app was notified, else the previous version is put back.
	HealthURL string
	// HealthTimeout bounds the wait for HealthURL. Zero means 30s.
	HealthTimeout time.Duration
	// CommandTimeout bounds the validate command, each exec notifier and each
	// http notifier attempt. Zero means 30s.
	CommandTimeout time.Duration
	// OnDrift says what to do when the files in Dir no longer match the
	// applied version: DriftRestore (the default), DriftReport or DriftOff.
	OnDrift string
	// DriftInterval is how often Dir is re-hashed. Zero means 1m.
	DriftInterval time.Duration
	// Etcd holds the TLS and authentication settings of an etcd:// Source
	// (the --etcd-* flags); zero is plain text without authentication.
	Etcd etcdclient.Options
	// HTTPClient is used for http sources, http notifiers and health checks.
	// If nil, a client with sane timeouts and no proxy is used.
	HTTPClient *http.Client
	// Logger receives lifecycle logs; file contents are never logged.
	// If nil, logs are discarded.
	Logger *slog.Logger
	// Registerer receives the outrider_configsync_* metrics. If nil, metrics
	// are kept but not exported.
	Registerer prometheus.Registerer
	// Now returns the current time. If nil, time.Now is used.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.Interval == 0 {
		c.Interval = 30 * time.Second
	}
	if c.Debounce == 0 {
		c.Debounce = time.Second
	}
	if c.HealthTimeout == 0 {
		c.HealthTimeout = 30 * time.Second
	}
	if c.CommandTimeout == 0 {
		c.CommandTimeout = 30 * time.Second
	}
	if c.OnDrift == "" {
		c.OnDrift = DriftRestore
	}
	if c.DriftInterval == 0 {
		c.DriftInterval = time.Minute
	}
	if c.KeepVersions == 0 {
		c.KeepVersions = 5
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{Proxy: nil, ResponseHeaderTimeout: 30 * time.Second, MaxIdleConnsPerHost: 2},
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Registerer == nil {
		c.Registerer = prometheus.NewRegistry()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports every problem with c, joined.
func (c Config) Validate() error {
	var errs []error
	if c.Source == "" {
		errs = append(errs, errors.New("configsync: source is required"))
	} else if u, err := url.Parse(c.Source); err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "dir" && u.Scheme != "etcd") {
		errs = append(errs, fmt.Errorf("configsync: source %q: want http(s)://…, dir:///path or etcd://host:port/prefix", c.Source))
	} else if c.File != "" && u.Scheme != "http" && u.Scheme != "https" {
		errs = append(errs, fmt.Errorf("configsync: file %q: single-file mode needs an http(s) source", c.File))
	}
	if c.File != "" {
		if err := CheckPath(c.File); err != nil {
			errs = append(errs, fmt.Errorf("configsync: file: %w", err))
		}
	}
	if c.Dir == "" {
		errs = append(errs, errors.New("configsync: dir is required"))
	} else if !filepath.IsAbs(c.Dir) {
		errs = append(errs, fmt.Errorf("configsync: dir %q must be an absolute path", c.Dir))
	}
	if c.StateDir != "" {
		if !filepath.IsAbs(c.StateDir) {
			errs = append(errs, fmt.Errorf("configsync: state dir %q must be an absolute path", c.StateDir))
		} else if c.Dir != "" && within(filepath.Clean(c.Dir), filepath.Clean(c.StateDir)) {
			errs = append(errs, fmt.Errorf("configsync: state dir %q must not be inside dir %q", c.StateDir, c.Dir))
		} else if c.Dir != "" && filepath.IsAbs(c.Dir) {
			// The app can write dir: a state dir that leads into it through
			// a symlink would let the app choose what is restored.
			if d, st := resolvePath(c.Dir, 0), resolvePath(c.StateDir, 0); within(d, st) {
				errs = append(errs, fmt.Errorf("configsync: state dir %q must not be inside dir %q (through a symlink it is %q, inside %q)", c.StateDir, c.Dir, st, d))
			}
		}
	}
	if c.KeepVersions < 0 {
		errs = append(errs, fmt.Errorf("configsync: keep versions %d must be at least 1", c.KeepVersions))
	}
	for name, d := range map[string]time.Duration{
		"interval": c.Interval, "debounce": c.Debounce, "health timeout": c.HealthTimeout,
		"command timeout": c.CommandTimeout, "drift interval": c.DriftInterval,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("configsync: %s %v must not be negative", name, d))
		}
	}
	if c.ValidateCommand != "" {
		if _, err := splitCommand(c.ValidateCommand); err != nil {
			errs = append(errs, fmt.Errorf("configsync: validate command %q: %w", c.ValidateCommand, err))
		}
	}
	for _, n := range c.Notify {
		if _, err := ParseNotifier(n); err != nil {
			errs = append(errs, err)
		}
	}
	if c.HealthURL != "" {
		if u, err := url.Parse(c.HealthURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("configsync: health url %q: want http(s)://host/path", c.HealthURL))
		}
	}
	switch c.OnDrift {
	case "", DriftRestore, DriftReport, DriftOff:
	default:
		errs = append(errs, fmt.Errorf("configsync: on-drift %q: want restore, report or off", c.OnDrift))
	}
	return errors.Join(errs...)
}

// resolvePath returns the absolute, clean p with every symlink resolved,
// also where p does not exist yet: the existing part is resolved, a dangling
// symlink is resolved through its target, and the rest is appended.
func resolvePath(p string, depth int) string {
	p = filepath.Clean(p)
	if depth > 40 {
		return p
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	if fi, err := os.Lstat(p); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if t, err := os.Readlink(p); err == nil {
			if !filepath.IsAbs(t) {
				t = filepath.Join(filepath.Dir(p), t)
			}
			return resolvePath(t, depth+1)
		}
	}
	parent := filepath.Dir(p)
	if parent == p {
		return p
	}
	return filepath.Join(resolvePath(parent, depth+1), filepath.Base(p))
}

// within reports whether path is dir or below it (both cleaned, absolute).
func within(dir, path string) bool {
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}
