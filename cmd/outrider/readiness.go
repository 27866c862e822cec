package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/outrider-dev/outrider/certs"
	"github.com/outrider-dev/outrider/internal/admin"
)

// certificateCheck is the proxy's "certificate" readiness check.
//
// It fails when a name has no certificate or an expired one, with one
// exception: a first ACME certificate that is being obtained while this
// process answers the HTTP-01 or TLS-ALPN-01 challenge. Behind a Kubernetes
// Service (or any load balancer that routes by readiness) the CA's
// validation reaches only ready backends, so a first deploy that waited for
// its certificate to become ready could never obtain it. That case, and a
// certificate that serves but needs an operator (expiring soon, renewals
// failing), are readiness warnings: /readyz answers 200 and says why.
func certificateCheck(m *certs.Manager, challengesServed bool) func(context.Context) error {
	return func(ctx context.Context) error {
		err := m.Ready(ctx)
		st := m.Status()
		if err != nil {
			if pending := firstOrdersPending(st); challengesServed && len(pending) > 0 {
				return admin.Warning(errors.New("first certificate for " + strings.Join(pending, ", ") +
					" being obtained; ready meanwhile so that the CA's challenge can reach this process"))
			}
			return err
		}
		var warns []string
		for _, s := range st {
			if s.Warning != "" {
				warns = append(warns, strings.Join(s.Names, ",")+": "+s.Warning)
			}
		}
		if len(warns) > 0 {
			return admin.Warning(errors.New(strings.Join(warns, "; ")))
		}
		return nil
	}
}

// firstOrdersPending returns the names whose first ACME certificate is
// being ordered, or nil when anything else is wrong: a name with an expired
// certificate, one whose order was refused by the duplicate guard, or one
// not yet attempted (a stored certificate may still be loading, and a pod
// serving without it would fail handshakes).
func firstOrdersPending(st []certs.Status) []string {
	var pending []string
	for _, s := range st {
		if !s.NotAfter.IsZero() {
			if time.Now().After(s.NotAfter) {
				return nil // serving an expired certificate: not ready
			}
			continue
		}
		if s.Source != "acme" || s.LastAttempt.IsZero() || s.LastResult == "refused" {
			return nil
		}
		pending = append(pending, s.Names...)
	}
	return pending
}

// listenAdvice adds to a failed listen what to change: the flag to use for
// a port that is taken, or how to bind a low port without root.
func listenAdvice(err error, flags string) error {
	switch {
	case errors.Is(err, syscall.EACCES):
		exe, _ := os.Executable()
		return fmt.Errorf("%w: ports below 1024 need root or CAP_NET_BIND_SERVICE: listen on high ports "+
			"(--listen :8443 --http-listen :8080, with 443 and 80 forwarded to them) or grant the capability "+
			"(sudo setcap cap_net_bind_service=+ep %s)", err, exe)
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("%w: another process holds that address; stop it or choose another with %s", err, flags)
	}
	return err
}

// checkStorage makes sure a directory --storage can be written before the
// certificate source opens it, so that a non-root user running with the
// default /var/lib/outrider is told which flag to change instead of
// meeting a lock file error deep inside certmagic.
func checkStorage(cfg certs.Config) error {
	if cfg.CertFile != "" || cfg.Storage == "" || strings.Contains(cfg.Storage, "://") {
		return nil // static files need no storage; etcd:// is checked by its client
	}
	err := os.MkdirAll(cfg.Storage, 0o700)
	if err == nil {
		var f *os.File
		if f, err = os.CreateTemp(cfg.Storage, ".outrider-write-check-*"); err == nil {
			f.Close()
			os.Remove(f.Name())
		}
	}
	if err == nil {
		return nil
	}
	hint := "give a directory this user can write"
	if errors.Is(err, fs.ErrPermission) && os.Geteuid() != 0 {
		hint = "not running as root: give a directory this user can write (e.g. --storage $HOME/.local/share/outrider, " +
			"or set XDG_DATA_HOME), or create " + cfg.Storage + " owned by this user"
	}
	return fmt.Errorf("--storage %s is not writable: %w; %s", cfg.Storage, err, hint)
}
