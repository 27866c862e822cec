package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/outrider-dev/outrider/internal/admin"
	"github.com/outrider-dev/outrider/topapi"
)

func runTop(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("outrider top", "Serve a uniform, authenticated /top of this host's processes and resources\n"+
		"(JSON, a text table, a live HTML page, /top/openapi.json) and /metrics, from one\n"+
		"background sampler. Stays on loopback unless --listen says otherwise.")
	listen := fs.String("listen", "127.0.0.1:9903", "`address` for /top, /metrics, /healthz and /readyz")
	insecure := fs.Bool("insecure-no-auth", false, "serve /top without --token-file on a --listen that is not loopback (every process, to anyone who can connect)")
	tf := addTopFlags(fs, "")
	pprof := fs.Bool("pprof", false, "serve /debug/pprof/ on the listener")
	lf := addLogFlags(fs)
	log, err := lf.parse(fs, args, stdout, stderr)
	if err != nil {
		return err
	}
	if *tf.tokenFile == "" && !isLoopbackAddr(*listen) && !*insecure {
		return usageError{fmt.Errorf("--listen %s is not a loopback address and there is no --token-file: "+
			"/top would list every process to the network; give --token-file, or --insecure-no-auth to serve it anyway", *listen)}
	}
	reg := newRegistry()
	sampler, handler, err := tf.build(log, reg)
	if err != nil {
		return err
	}
	// With a token, /metrics needs it too: its per-process series name
	// processes. Prometheus sends it with authorization.credentials_file.
	var gatherer prometheus.Gatherer = reg
	if *tf.tokenFile != "" {
		gatherer = nil
	}
	adm := admin.New(admin.Config{
		Addr:     *listen,
		Gatherer: gatherer,
		Pprof:    *pprof,
		Logger:   log.With("component", "admin"),
		Checks:   []admin.Check{{Name: "top sampler", Func: sampler.Ready}},
	})
	adm.Handle("GET /top", handler)
	adm.Handle("GET /top/", handler)
	if gatherer == nil {
		adm.Handle("GET /metrics", handler.RequireToken(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	}
	// The same series where `outrider proxy --top` serves them.
	adm.Handle("GET /top/metrics", handler.RequireToken(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	if err := adm.Listen(); err != nil {
		return listenAdvice(err, "--listen")
	}
	log.Info("listening", "admin_addr", adm.Addr(), "scope", *tf.scope, "interval_seconds", sampler.Interval().Seconds(),
		"auth", *tf.tokenFile != "")
	err = serve(ctx, log, adm, service{name: "top", run: sampler.Run, reload: handler.Reload})
	if err == nil {
		log.Info("stopped")
	}
	return err
}

// topFlags are the sampler and handler flags, shared by "outrider top" and
// "outrider proxy --top" (there with the "top-" prefix).
type topFlags struct {
	interval  *time.Duration
	tokenFile *string
	scope     *string
	cmdline   *string
	topN      *int
	prefix    string
}

func addTopFlags(fs *flagSet, prefix string) *topFlags {
	return &topFlags{
		prefix:    prefix,
		interval:  durationFlag(fs, prefix+"interval", 2*time.Second, "sampling period; requests read the latest sample"),
		tokenFile: fs.String(prefix+"token-file", "", "`file` holding the bearer token every /top request needs (re-read on SIGHUP)"),
		scope:     fs.String(prefix+"scope", "host", "processes listed: host, cgroup (this container), tree=PID or tree=pidfile=PATH"),
		cmdline:   fs.String(prefix+"cmdline", "on", "show command lines (redacted): on or off"),
		topN:      fs.Int(prefix+"top-n", 10, "per-process /metrics series for this many busiest processes; 0 turns them off"),
	}
}

// build makes the sampler (its metrics registered on reg) and its handler.
func (tf *topFlags) build(log *slog.Logger, reg prometheus.Registerer) (*topapi.Sampler, *topapi.Handler, error) {
	scope, err := topapi.ParseScope(*tf.scope)
	if err != nil {
		return nil, nil, usageError{fmt.Errorf("invalid value %q for flag --%sscope: %w", *tf.scope, tf.prefix, err)}
	}
	var hide bool
	switch *tf.cmdline {
	case "on", "true":
	case "off", "false":
		hide = true
	default:
		return nil, nil, usageError{fmt.Errorf("invalid value %q for flag --%scmdline: want on or off", *tf.cmdline, tf.prefix)}
	}
	topN := *tf.topN
	switch {
	case topN < 0:
		return nil, nil, usageError{fmt.Errorf("invalid value %d for flag --%stop-n: must not be negative", topN, tf.prefix)}
	case topN == 0:
		topN = -1 // topapi: negative turns the series off
	}
	if *tf.interval == 0 {
		return nil, nil, usageError{fmt.Errorf("invalid value 0 for flag --%sinterval: must be positive", tf.prefix)}
	}
	sampler, err := topapi.New(topapi.Config{
		Interval:    *tf.interval,
		Scope:       scope,
		HideCmdline: hide,
		TopN:        topN,
		Logger:      log.With("component", "topapi"),
		Registerer:  reg,
	})
	if err != nil {
		return nil, nil, usageError{err}
	}
	handler, err := topapi.NewHandler(topapi.HandlerConfig{
		Sampler:   sampler,
		TokenFile: *tf.tokenFile,
		Logger:    log.With("component", "topapi"),
	})
	if err != nil {
		return nil, nil, usageError{fmt.Errorf("flag --%stoken-file: %w", tf.prefix, err)}
	}
	warnTokenFileMode(log, *tf.tokenFile, "--"+tf.prefix+"token-file")
	return sampler, handler, nil
}

// warnTokenFileMode warns when a token file can be read by other users.
func warnTokenFileMode(log *slog.Logger, path, flagName string) {
	if path == "" {
		return
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		log.Warn("token file is readable by other users; chmod 600 it", "file", path, "flag", flagName,
			"mode", fmt.Sprintf("%04o", st.Mode().Perm()))
	}
}

// isLoopbackAddr reports whether a listen address binds loopback only:
// 127.0.0.0/8, ::1 or localhost. An empty host (all interfaces) is not.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// proxyTop is "outrider proxy --top": /top with the defaults of "outrider
// top", mounted on the proxy's admin listener and, with --top-public, on its
// HTTPS listener too. Its series are on /top/metrics, behind the same token
// as /top, not on the admin /metrics: they name every busy process.
type proxyTop struct {
	sampler *topapi.Sampler
	handler *topapi.Handler
	reg     *prometheus.Registry
}

func newProxyTop(log *slog.Logger, tokenFile string) (*proxyTop, error) {
	interval, scope, cmdline, topN := 2*time.Second, "host", "on", 10
	tf := &topFlags{interval: &interval, tokenFile: &tokenFile, scope: &scope, cmdline: &cmdline, topN: &topN, prefix: "top-"}
	reg := prometheus.NewRegistry()
	sampler, handler, err := tf.build(log, reg)
	if err != nil {
		return nil, err
	}
	return &proxyTop{sampler: sampler, handler: handler, reg: reg}, nil
}

// mount adds /top and /top/metrics to the admin server and returns the
// sampler as a service.
func (pt *proxyTop) mount(adm *admin.Server) service {
	adm.Handle("GET /top", pt.handler)
	adm.Handle("GET /top/", pt.handler)
	adm.Handle("GET /top/metrics", pt.handler.RequireToken(promhttp.HandlerFor(pt.reg, promhttp.HandlerOpts{})))
	adm.AddCheck(admin.Check{Name: "top sampler", Func: pt.sampler.Ready})
	return service{name: "top", run: pt.sampler.Run, reload: pt.handler.Reload}
}
