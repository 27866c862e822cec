package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// logFlags are the logging flags every long-running subcommand has.
type logFlags struct {
	format *string
	level  *string
}

func addLogFlags(fs *flagSet) *logFlags {
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
	format := strings.ToLower(*lf.format)
	if format == "" {
		format = "json"
		if isTerminal(stderr) {
			format = "text"
		}
	}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(stderr, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(stderr, opts)), nil
	default:
		return nil, usageError{fmt.Errorf("invalid value %q for flag --log-format: want text or json", *lf.format)}
	}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
