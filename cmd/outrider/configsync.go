package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/outrider-dev/outrider/configsync"
	"github.com/outrider-dev/outrider/internal/admin"
	"github.com/outrider-dev/outrider/internal/etcdclient"
	"github.com/prometheus/client_golang/prometheus"
)

// configsyncFlags are the flags of the config-sync loop. `outrider
// configsync` registers them bare; `outrider proxy` registers them under
// the "configsync-" prefix to run the same loop in-process.
type configsyncFlags struct {
	prefix string

	source         *string
	file           *string
	tokenFile      *string
	dir            *string
	stateDir       *string
	keepVersions   *int
	interval       *time.Duration
	debounce       *time.Duration
	validate       *string
	notify         *listFlag
	healthURL      *string
	healthTimeout  *time.Duration
	commandTimeout *time.Duration
	onDrift        *string
	driftInterval  *time.Duration
	etcd           func() etcdclient.Options // --etcd-* (etcdflags.go)
}

func addConfigsyncFlags(fs *flagSet, prefix string) *configsyncFlags {
	return &configsyncFlags{
		prefix:       prefix,
		source:       fs.String(prefix+"source", "", "where the config lives: http(s)://… (polled), dir:///path (watched), etcd://host:2379/prefix (watched)"),
		file:         fs.String(prefix+"file", "", "single-file mode: the http source's body is this `name` in --"+prefix+"dir (default: JSON bundle)"),
		tokenFile:    fs.String(prefix+"token-file", "", "`file` holding a bearer token for the http source, re-read on every fetch"),
		dir:          fs.String(prefix+"dir", "", "absolute `dir` shared with the app, where its config files go (required with --"+prefix+"source)"),
		stateDir:     fs.String(prefix+"state-dir", "", "absolute `dir` keeping the last good versions, the newest restored at start; never inside --"+prefix+"dir, nor through a symlink into it (default: no state kept)"),
		keepVersions: fs.Int(prefix+"keep-versions", 5, "how many applied versions --"+prefix+"state-dir keeps for restore and rollback"),
		interval:     durationFlag(fs, prefix+"interval", 30*time.Second, "poll period of http sources and rescan period of dir sources (jittered; errors back off up to 8× this, at most 5m)"),
		debounce:     durationFlag(fs, prefix+"debounce", time.Second, "changes must be quiet this long before one apply (at most 10× this after the first)"),
		validate:     fs.String(prefix+"validate", "", "`command` run on the staged files before they go live; {dir} is the staging directory; non-zero exit refuses the version"),
		notify: newListFlag(fs, prefix+"notify", "how to tell the app to reload: signal:HUP:pidfile=PATH, signal:HUP:process=NAME, "+
			"http:POST:http://127.0.0.1:8080/-/reload, exec:/path/cmd arg…"),
		healthURL:      fs.String(prefix+"health-url", "", "`URL` that must answer 2xx after notifying, else the previous version is put back"),
		healthTimeout:  durationFlag(fs, prefix+"health-timeout", 30*time.Second, "how long --"+prefix+"health-url may take to answer 2xx"),
		commandTimeout: durationFlag(fs, prefix+"command-timeout", 30*time.Second, "limit for the validate command, exec notifiers and each http notifier attempt"),
		onDrift:        fs.String(prefix+"on-drift", configsync.DriftRestore, "when files in --"+prefix+"dir are edited by hand: restore, report or off"),
		driftInterval:  durationFlag(fs, prefix+"drift-interval", time.Minute, "how often --"+prefix+"dir is re-hashed to detect drift"),
		etcd:           addEtcdFlags(fs),
	}
}

// config returns the configsync.Config the flags describe, and whether the
// loop is on at all (--source given).
func (f *configsyncFlags) config(log *slog.Logger, reg prometheus.Registerer) (configsync.Config, bool, error) {
	if *f.source == "" {
		if *f.dir != "" || len(f.notify.values) > 0 || *f.file != "" {
			return configsync.Config{}, false, usageError{fmt.Errorf("--%sdir, --%snotify and --%sfile need --%ssource", f.prefix, f.prefix, f.prefix, f.prefix)}
		}
		return configsync.Config{}, false, nil
	}
	if *f.keepVersions < 1 {
		return configsync.Config{}, true, usageError{fmt.Errorf("--%skeep-versions %d: want at least 1", f.prefix, *f.keepVersions)}
	}
	cfg := configsync.Config{
		Source:          *f.source,
		File:            *f.file,
		TokenFile:       *f.tokenFile,
		Dir:             *f.dir,
		StateDir:        *f.stateDir,
		KeepVersions:    *f.keepVersions,
		Interval:        *f.interval,
		Debounce:        *f.debounce,
		ValidateCommand: *f.validate,
		Notify:          f.notify.values,
		HealthURL:       *f.healthURL,
		HealthTimeout:   *f.healthTimeout,
		CommandTimeout:  *f.commandTimeout,
		OnDrift:         *f.onDrift,
		DriftInterval:   *f.driftInterval,
		Etcd:            f.etcd(),
		Logger:          log,
		Registerer:      reg,
	}
	if err := cfg.Validate(); err != nil {
		// Every problem on one line: Validate joins them with newlines.
		return configsync.Config{}, true, usageError{errors.New(strings.ReplaceAll(err.Error(), "\n", "; "))}
	}
	return cfg, true, nil
}

func runConfigsync(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if isConfigsyncEtcdHelper(args) {
		return runConfigsyncEtcd(ctx, args, stdout, stderr) // publish, rollback: configsync_etcd.go
	}
	fs := newFlagSet("outrider configsync", "Keep the app's config files in --dir in sync with --source: each new version is\n"+
		"checked, staged, validated (--validate), made live in one atomic step, announced to the\n"+
		"app (--notify), verified (--health-url) and rolled back when the app turns unhealthy.\n"+
		"For etcd:// sources, 'outrider configsync publish -h' and 'rollback -h' are the operator helpers.")
	cf := addConfigsyncFlags(fs, "")
	adminListen := fs.String("admin-listen", "127.0.0.1:9902", "`address` for /metrics, /healthz, /readyz, /status; empty turns it off")
	once := fs.Bool("once", false, "fetch and apply once, then exit (init containers); non-zero exit when the source is unreachable")
	dryRun := fs.Bool("dry-run", false, "fetch once and print a unified diff of what would change (secret-looking values redacted); change nothing")
	lf := addLogFlags(fs)
	log, err := lf.parse(fs, args, stdout, stderr)
	if err != nil {
		return err
	}
	if *once && *dryRun {
		return usageError{errors.New("--once and --dry-run exclude each other")}
	}
	reg := newRegistry()
	cfg, enabled, err := cf.config(log.With("component", "configsync"), reg)
	if err != nil {
		return err
	}
	if !enabled {
		return usageError{errors.New("--source is required (http(s)://… or dir:///path)")}
	}
	syncer, err := configsync.New(cfg)
	if err != nil {
		return usageError{err}
	}
	switch {
	case *dryRun:
		return syncer.DryRun(ctx, stdout)
	case *once:
		if err := syncer.RunOnce(ctx); err != nil {
			return err
		}
		st := syncer.Status()
		log.Info("done", "applied_version", st.AppliedVersion, "result", st.LastResult)
		return nil
	}

	adm := admin.New(admin.Config{
		Addr:     *adminListen,
		Gatherer: reg,
		Logger:   log.With("component", "admin"),
		Checks:   []admin.Check{{Name: "configsync", Func: syncer.Ready}},
	})
	adm.Handle("GET /status", statusHandler(map[string]func() any{
		"configsync": func() any { return syncer.Status() },
	}))
	if err := adm.Listen(); err != nil {
		return listenAdvice(err, "--admin-listen")
	}
	log.Info("listening", "admin_addr", adm.Addr(), "source", syncer.Status().Source, "dir", cfg.Dir)
	err = serve(ctx, log, adm, service{name: "configsync", run: syncer.Run, reload: syncer.Reload})
	if err == nil {
		log.Info("stopped")
	}
	return err
}
