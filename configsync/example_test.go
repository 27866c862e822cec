package configsync_test

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/outrider-dev/outrider/configsync"
)

// A sidecar keeping /shared/app.conf in sync with a config API: each new
// version is validated, made live atomically, announced with SIGHUP, and
// rolled back when the app's health check fails.
func Example() {
	s, err := configsync.New(configsync.Config{
		Source:          "http://127.0.0.1:8500/v1/config/app",
		File:            "app.conf",
		Dir:             "/shared",
		StateDir:        "/var/lib/outrider/configsync",
		Interval:        30 * time.Second,
		ValidateCommand: "/usr/local/bin/app --check-config {dir}/app.conf",
		Notify:          []string{"signal:HUP:pidfile=/shared/app.pid"},
		HealthURL:       "http://127.0.0.1:8080/healthz",
		Logger:          slog.Default(),
	})
	if err != nil {
		slog.Error("configsync", "err", err)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	_ = s.Run(ctx) // until SIGINT/SIGTERM; call s.Reload on SIGHUP
}
