package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/outrider-dev/outrider/internal/admin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
)

// newRegistry returns the process's one metrics registry with the Go and
// process collectors and outrider_build_info.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	bi := readBuildInfo()
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "outrider", Name: "build_info",
		Help:        "Always 1; labels carry the version and Go version.",
		ConstLabels: prometheus.Labels{"version": bi.Version, "go_version": bi.GoVersion},
	})
	buildInfo.Set(1)
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo,
	)
	return reg
}

// service is one long-running part of a subcommand. run blocks until ctx is
// done and everything it started has stopped; reload (optional) is called on
// SIGHUP and must keep the old state on failure.
type service struct {
	name   string
	run    func(ctx context.Context) error
	reload func(ctx context.Context) error
}

// serve runs services and the admin server until ctx is done or one of them
// fails. On shutdown it first marks /readyz not ready, then stops the
// services, and stops the admin server last so probes can watch the drain.
// SIGHUP calls every reload. GOMEMLIMIT follows the cgroup's memory limit.
func serve(ctx context.Context, log *slog.Logger, adm *admin.Server, services ...service) error {
	return serveDrainable(ctx, log, adm, nil, services...)
}

// serveDrainable is serve with a /drain (drain.go), when drain is not nil:
// a drain stops the services as a shutdown does, but the admin server
// (probes) and the process stay until ctx is done.
func serveDrainable(ctx context.Context, log *slog.Logger, adm *admin.Server, drain *drainer, services ...service) error {
	setMemoryLimit(log) // every long-running sidecar process, not only the proxy
	var drainReq <-chan time.Duration
	var drained atomic.Bool
	if drain != nil {
		drainReq = drain.req
	}
	g, gctx := errgroup.WithContext(ctx)
	svcCtx, stopServices := context.WithCancel(context.WithoutCancel(ctx))
	admCtx, stopAdmin := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServices()
	defer stopAdmin()

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	// Services share one context: the first to fail stops the others.
	svcGroup, svcGroupCtx := errgroup.WithContext(svcCtx)
	for _, s := range services {
		svcGroup.Go(func() error {
			err := s.run(svcGroupCtx)
			if err != nil {
				log.Error("component failed", "component", s.name, "err", err)
			}
			return err
		})
	}
	g.Go(func() error {
		err := svcGroup.Wait()
		if drain != nil {
			drain.finished()
		}
		if err == nil && drained.Load() {
			log.Info("drained; waiting for SIGTERM")
			<-gctx.Done()
		}
		stopAdmin() // after the drain, so probes saw 503 throughout
		return err
	})
	g.Go(func() error { return adm.Serve(admCtx) })
	g.Go(func() error {
		for {
			select {
			case <-gctx.Done():
				adm.SetStopping()
				stopServices()
				return nil
			case <-svcGroupCtx.Done():
				// A service failed: shut the rest down the same way.
				adm.SetStopping()
				stopServices()
				return nil
			case delay := <-drainReq:
				log.Info("drain requested: not ready, serving on, then draining", "delay_seconds", delay.Seconds())
				adm.SetStopping()
				t := time.NewTimer(delay)
				select {
				case <-t.C:
				case <-gctx.Done():
				}
				t.Stop()
				drained.Store(true)
				stopServices()
				drainReq = nil
			case <-hup:
				log.Info("SIGHUP: reloading")
				for _, s := range services {
					if s.reload == nil {
						continue
					}
					if err := s.reload(gctx); err != nil {
						log.Warn("reload failed; keeping the previous state", "component", s.name, "err", err)
					}
				}
			}
		}
	})
	return g.Wait()
}

// statusHandler serves /status: one JSON object with a key per part.
func statusHandler(parts map[string]func() any) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		out := make(map[string]any, len(parts))
		for k, f := range parts {
			out[k] = f()
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(out)
	})
}
