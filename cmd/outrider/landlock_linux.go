//go:build linux

package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/landlock-lsm/go-landlock/landlock"
	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
)

// Landlock confines outrider proxy's file access to what it needs, so that
// a bug in request handling cannot read or write anything else on the host.
// go-landlock does the kernel work: it negotiates the ABI the kernel offers
// (best effort: a kernel without Landlock, or with an older ABI, gets what it
// supports), and applies the ruleset to every OS thread of the process, which
// the raw landlock_restrict_self(2) call does not.

// sandboxPaths are the paths outrider proxy may touch under --landlock.
type sandboxPaths struct {
	rw      []rwDir  // directories read and written: storage, configsync dirs
	roDirs  []string // directories read: certificate dirs (watched for swaps), /proc for --top
	roFiles []string // single files read: token files, DNS and CA configuration
}

// rwDir is a writable directory and the mode it is created with when
// missing: a rule can only name a path that exists.
type rwDir struct {
	path string
	mode os.FileMode
}

// proxySandbox lists what the proxy's flags say it needs. It refuses the
// flags whose needs cannot be listed: running a --configsync-validate or
// exec: notifier command means executing arbitrary programs.
func proxySandbox(cf *certFlags, csf *configsyncFlags, topTokenFile string, top bool) (sandboxPaths, error) {
	var p sandboxPaths
	if s := *cf.storage; s != "" && !strings.Contains(s, "://") {
		p.rw = append(p.rw, rwDir{s, 0o700})
	}
	for _, f := range []string{*cf.cert, *cf.key} {
		if f != "" {
			// The directory, not the file: reloads follow renames and
			// Kubernetes ..data symlink swaps inside it.
			p.roDirs = append(p.roDirs, filepath.Dir(f))
		}
	}
	if strings.HasPrefix(*cf.acmeDNS, "exec:") {
		return p, errors.New("--landlock cannot be combined with --acme-dns exec: (it runs a command); use --acme-dns rfc2136")
	}
	for _, f := range []string{*cf.acmeCARoot, *cf.acmeEABHMACFile, *cf.acmeDNSTSIGKeyFile, topTokenFile, *csf.tokenFile} {
		if f != "" {
			p.roFiles = append(p.roFiles, f)
		}
	}
	if *csf.source != "" {
		if *csf.validate != "" {
			return p, errors.New("--landlock cannot be combined with --configsync-validate (it runs a command); run `outrider configsync` as its own process")
		}
		for _, n := range csf.notify.values {
			if strings.HasPrefix(n, "exec:") {
				return p, errors.New("--landlock cannot be combined with an exec: notifier; run `outrider configsync` as its own process")
			}
			if _, pidfile, ok := strings.Cut(n, "pidfile="); ok {
				p.roFiles = append(p.roFiles, pidfile)
			}
		}
		if *csf.dir != "" {
			p.rw = append(p.rw, rwDir{*csf.dir, 0o755}) // the app reads it
		}
		if *csf.stateDir != "" {
			p.rw = append(p.rw, rwDir{*csf.stateDir, 0o700})
		}
		if src, ok := strings.CutPrefix(*csf.source, "dir://"); ok {
			p.roDirs = append(p.roDirs, src)
		}
		p.roDirs = append(p.roDirs, "/proc") // signal:…:process=NAME
	}
	if top {
		p.roDirs = append(p.roDirs, "/proc", "/sys/fs/cgroup")
		p.roFiles = append(p.roFiles, "/etc/passwd", "/etc/group")
	}
	// System roots (ACME over HTTPS) and name resolution.
	p.roDirs = append(p.roDirs, "/etc/ssl", "/etc/pki", "/etc/ca-certificates", "/usr/share/ca-certificates")
	p.roFiles = append(p.roFiles, "/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/gai.conf")
	return p, nil
}

// restrictFiles applies the sandbox to the whole process, best effort. It
// returns an error only when the kernel has Landlock and refused the rules.
func restrictFiles(log *slog.Logger, p sandboxPaths) error {
	abi, err := llsys.LandlockGetABIVersion()
	if err != nil || abi < 1 {
		log.Warn("landlock not available in this kernel; file access is not restricted", "err", err)
		return nil
	}
	var rw []string
	for _, d := range p.rw {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return fmt.Errorf("creating %s before applying landlock: %w", d.path, err)
		}
		rw = append(rw, d.path)
	}
	err = landlock.V7.BestEffort().RestrictPaths(
		landlock.RWDirs(rw...).WithRefer(),
		landlock.RODirs(p.roDirs...).IgnoreIfMissing(),
		landlock.ROFiles(p.roFiles...).IgnoreIfMissing(),
	)
	if err != nil {
		return fmt.Errorf("applying landlock: %w", err)
	}
	log.Info("landlock applied", "abi", abi, "rw", rw, "ro_dirs", p.roDirs, "ro_files", p.roFiles)
	return nil
}

// addWatchedFiles lets the sandbox read the directories of files that are
// reloaded when they change (--client-ca, --client-crl).
func (p *sandboxPaths) addWatchedFiles(files ...string) {
	for _, f := range files {
		if f != "" {
			p.roDirs = append(p.roDirs, filepath.Dir(f))
		}
	}
}
