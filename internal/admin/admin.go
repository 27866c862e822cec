// Package admin is the operator-facing HTTP listener every outrider subcommand
// runs: /healthz, /readyz, /metrics, optional pprof, and whatever handlers the
// subcommand mounts (/status, /top). It serves plain HTTP and is meant for
// loopback; it holds no business logic.
package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness condition. Func returns nil when the condition holds;
// its error text is shown on /readyz, so it should say what is missing. An
// error made with [Warning] does not fail readiness: it is listed after
// "ok". Func must be safe for concurrent use and honour ctx.
type Check struct {
	Name string
	Func func(ctx context.Context) error
}

// Warning wraps err so that a Check returning it stays ready while /readyz
// shows why an operator should look (a certificate close to expiry). It
// returns nil for a nil err.
func Warning(err error) error {
	if err == nil {
		return nil
	}
	return warning{err}
}

type warning struct{ error }

func (w warning) Unwrap() error { return w.error }

// Config configures a Server. The zero value serves nothing useful: Addr is
// required.
type Config struct {
	// Addr is the listen address, e.g. "127.0.0.1:9901". Empty turns the
	// admin listener off (Listen and Serve then do nothing).
	Addr string
	// Gatherer is exposed on /metrics. If nil, /metrics answers 404.
	Gatherer prometheus.Gatherer
	// Checks must all pass for /readyz to answer 200.
	Checks []Check
	// Pprof mounts net/http/pprof under /debug/pprof/. Off by default: it
	// exposes internals and costs CPU when used.
	Pprof bool
	// Logger receives errors, and readiness changes while Serve runs. If
	// nil, logs are discarded.
	Logger *slog.Logger
	// ReadinessInterval is how often Serve evaluates the checks to log
	// readiness changes ("ready", "not ready" with the reason). If zero,
	// 2s; negative turns the logging off.
	ReadinessInterval time.Duration
}

// Server is the admin HTTP server.
type Server struct {
	cfg      Config
	mux      *http.ServeMux
	ln       net.Listener
	stopping atomic.Bool
}

// New returns a Server; call Handle to mount more handlers, then Listen and Serve.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ReadinessInterval == 0 {
		cfg.ReadinessInterval = 2 * time.Second
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	if cfg.Gatherer != nil {
		s.mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{
			ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		}))
	}
	if cfg.Pprof {
		s.mux.HandleFunc("/debug/pprof/", pprof.Index)
		s.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		s.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		s.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		s.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return s
}

// Handle mounts h at pattern (http.ServeMux syntax).
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// AddCheck adds a readiness condition. Call it before Serve.
func (s *Server) AddCheck(c Check) { s.cfg.Checks = append(s.cfg.Checks, c) }

// Handler returns the admin mux, for tests and for mounting elsewhere.
func (s *Server) Handler() http.Handler { return s.mux }

// SetStopping makes /readyz answer 503 from now on: a shutdown has begun.
func (s *Server) SetStopping() { s.stopping.Store(true) }

// Ready runs every check and returns their joined errors, or nil.
// Warnings do not count.
func (s *Server) Ready(ctx context.Context) error {
	_, err := s.check(ctx)
	return err
}

// check runs every check and returns the warnings, each prefixed with its
// check's name, and the failures, joined.
func (s *Server) check(ctx context.Context) ([]string, error) {
	if s.stopping.Load() {
		return nil, errors.New("shutting down")
	}
	var errs []error
	var warns []string
	for _, c := range s.cfg.Checks {
		err := c.Func(ctx)
		var w warning
		switch {
		case err == nil:
		case errors.As(err, &w):
			warns = append(warns, c.Name+": "+w.Error())
		default:
			errs = append(errs, fmt.Errorf("%s: %w", c.Name, err))
		}
	}
	return warns, errors.Join(errs...)
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	warns, err := s.check(ctx)
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "not ready:\n"+strings.TrimSpace(err.Error())+"\n")
	} else {
		io.WriteString(w, "ok\n")
	}
	for _, wn := range warns {
		io.WriteString(w, "warning: "+wn+"\n")
	}
}

// logReadiness evaluates the checks every ReadinessInterval until ctx is
// done and logs each change: "ready" when every check passes, "not ready"
// with the reason when one fails (the failing checks, not their changing
// texts, decide what a change is).
func (s *Server) logReadiness(ctx context.Context) {
	if s.cfg.ReadinessInterval < 0 {
		return
	}
	last := "unknown"
	t := time.NewTicker(s.cfg.ReadinessInterval)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := s.check(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		state := "ready"
		if err != nil {
			state = failingChecks(err)
		}
		if state != last {
			if err == nil {
				s.cfg.Logger.Info("ready")
			} else {
				s.cfg.Logger.Warn("not ready", "reason", strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; "))
			}
			last = state
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// failingChecks names the failing checks in a joined error from check.
func failingChecks(err error) string {
	var names []string
	for _, line := range strings.Split(err.Error(), "\n") {
		name, _, _ := strings.Cut(line, ":")
		names = append(names, name)
	}
	return strings.Join(names, ",")
}

// Listen binds the admin address. It does nothing when Addr is empty.
func (s *Server) Listen() error {
	if s.cfg.Addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	s.ln = ln
	return nil
}

// Addr returns the bound address, or "" when the listener is off or not bound.
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Serve serves until ctx is done, then shuts down within a few seconds.
// It returns nil after a clean shutdown. Listen must have been called.
func (s *Server) Serve(ctx context.Context) error {
	if s.ln == nil {
		<-ctx.Done()
		return nil
	}
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.ln) }()
	lctx, stopLog := context.WithCancel(ctx)
	logged := make(chan struct{})
	go func() { defer close(logged); s.logReadiness(lctx) }()
	defer func() { stopLog(); <-logged }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin listener: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-errc
	return nil
}
