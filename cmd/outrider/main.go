// Command outrider is a sidecar that gives a localhost-only HTTP application
// HTTPS with automatic certificates, keeps its config files in sync with a
// config API, and serves a uniform /top of the host. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/outrider-dev/outrider/internal/h2xconnect"
)

func main() {
	h2xconnect.Restore() // net/http has read it; children do not inherit it
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// command is one subcommand. run gets the arguments after the subcommand's
// name and writes requested output to stdout, logs to stderr.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"proxy", "HTTPS-terminating reverse proxy in front of a localhost-only app", runProxy},
		{"configsync", "keep the app's config files in sync with a config API, with reload and rollback", runConfigsync},
		{"top", "serve a uniform, authenticated /top of the host's processes and resources", runTop},
		{"demo", "run the whole pattern on this machine: app, proxy, configsync and /top", runDemo},
		{"ca", "internal CA tools: 'outrider ca root --storage DIR' prints the root certificate", runCA},
		{"ech", "Encrypted Client Hello: 'outrider ech config --storage DIR' prints the ECHConfigList to publish", runECH},
		{"preflight", "check that ACME ordering can succeed for --domain names", runPreflight},
		{"version", "print version, commit and Go version", runVersion},
	}
}

// exitUsage is the exit code for bad flags and arguments; 1 is for failures
// while running.
const exitUsage = 2

// usageError marks an error caused by the command line, not by the run.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		if len(args) > 1 {
			// "outrider help proxy" is "outrider proxy -h".
			return run(ctx, []string{args[1], "-h"}, stdout, stderr)
		}
		w := stdout
		if len(args) == 0 {
			w = stderr
		}
		usage(w)
		if len(args) == 0 {
			return exitUsage
		}
		return 0
	}
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		if err == nil || errors.Is(err, errHelp) {
			return 0
		}
		// One prefix, "outrider <command>: ", whatever the error wraps
		// (configsync's own errors already start with "configsync: ").
		msg := strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
		msg = strings.TrimPrefix(strings.TrimPrefix(msg, "outrider "+c.name+": "), c.name+": ")
		fmt.Fprintf(stderr, "outrider %s: %s\n", c.name, msg)
		if errors.As(err, new(usageError)) {
			return exitUsage
		}
		return 1
	}
	hint := "try 'outrider help'"
	if s := closest(args[0], names); s != "" {
		hint = fmt.Sprintf("did you mean %q?", s)
	}
	fmt.Fprintf(stderr, "outrider: unknown command %q (%s)\n", args[0], hint)
	return exitUsage
}

// closest returns the name nearest to s, or "" when none is within two edits.
func closest(s string, names []string) string {
	best, bestD := "", 3
	for _, n := range names {
		if d := editDistance(s, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: outrider <command> [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'outrider <command> -h' for its flags. Every flag can also be set by its\n"+
		"environment variable, shown there: OUTRIDER_ + the flag name for proxy (--acme-email is\n"+
		"OUTRIDER_ACME_EMAIL), OUTRIDER_ + the command + the flag name for the others (configsync\n"+
		"--interval is OUTRIDER_CONFIGSYNC_INTERVAL, like proxy --configsync-interval); --log-*,\n"+
		"--etcd-* and --storage are OUTRIDER_ + the flag name everywhere.")
}

// parseFlags parses a subcommand's flags and marks failures as usage errors.
func parseFlags(fs *flagSet, args []string, stdout io.Writer) error {
	if err := fs.parse(args, stdout); err != nil {
		if errors.Is(err, errHelp) {
			return err
		}
		return usageError{err}
	}
	return nil
}
