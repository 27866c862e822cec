package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// logFlags are the logging flags every long-running subcommand has.
type logFlags struct {
	format *string
	level  *string
}

func addLogFlags(fs *flagSet) *logFlags {
	fs.share("log-format", "log-level")
	return &logFlags{
		format: fs.String("log-format", "", "log format: text or json (default: text on a terminal, json otherwise)"),
		level:  fs.String("log-level", "info", "least severe level logged: debug, info, warn or error"),
	}
}

// parse parses a long-running subcommand's flags, then builds its logger
// from the logging flags among them.
func (lf *logFlags) parse(fs *flagSet, args []string, stdout, stderr io.Writer) (*slog.Logger, error) {
	if err := parseFlags(fs, args, stdout); err != nil {
		return nil, err
	}
	return lf.logger(stderr)
}

// logger builds the one slog handler of the process. Logs go to stderr;
// stdout carries only requested output.
func (lf *logFlags) logger(stderr io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*lf.level)); err != nil {
		return nil, usageError{fmt.Errorf("invalid value %q for flag --log-level: want debug, info, warn or error", *lf.level)}
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format := lf.resolvedFormat(stderr); format {
	case "json":
		return slog.New(slog.NewJSONHandler(stderr, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(stderr, opts)), nil
	default:
		return nil, usageError{fmt.Errorf("invalid value %q for flag --log-format: want text or json", *lf.format)}
	}
}

// resolvedFormat is --log-format, or json off a terminal and text on one.
func (lf *logFlags) resolvedFormat(stderr io.Writer) string {
	if format := strings.ToLower(*lf.format); format != "" {
		return format
	}
	if isTerminal(stderr) {
		return "text"
	}
	return "json"
}

// json reports whether logs to stderr are JSON lines.
func (lf *logFlags) json(stderr io.Writer) bool { return lf.resolvedFormat(stderr) == "json" }

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// lineBuffer batches log lines for a high-volume stream (the access log) and
// writes them together at most flushEvery later, or at once when maxBytes
// are pending: one write(2) per batch instead of one per request, which is
// a sixth of the proxy's CPU at full load. Lines are never split, and
// lifecycle logs do not go through it, so they are never delayed. Flush must
// be called before exit.
type lineBuffer struct {
	w          io.Writer
	flushEvery time.Duration
	maxBytes   int

	mu      sync.Mutex
	buf     []byte
	pending bool // a flush is scheduled
}

func newLineBuffer(w io.Writer) *lineBuffer {
	return &lineBuffer{w: w, flushEvery: 100 * time.Millisecond, maxBytes: 32 << 10}
}

// Write takes one or more whole lines, as slog handlers write them.
func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf)+len(p) > b.maxBytes {
		b.flushLocked()
	}
	b.buf = append(b.buf, p...)
	if !b.pending {
		b.pending = true
		time.AfterFunc(b.flushEvery, b.Flush)
	}
	return len(p), nil
}

// Flush writes what is pending.
func (b *lineBuffer) Flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushLocked()
	b.pending = false
}

func (b *lineBuffer) flushLocked() {
	if len(b.buf) > 0 {
		b.w.Write(b.buf) // a log sink that fails has nowhere to report to
		b.buf = b.buf[:0]
	}
}
