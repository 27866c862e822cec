package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// flagSet wraps flag.FlagSet with the rules every outrider subcommand shares:
// each flag has an environment twin (OUTRIDER_ + upper-cased name, '-' → '_'),
// a flag given on the command line wins over its twin, repeatable flags take a
// comma-separated list from the twin, and errors come back as one line.
type flagSet struct {
	*flag.FlagSet
	name    string // "outrider proxy"
	summary string
	lookup  func(string) (string, bool) // os.LookupEnv, replaceable in tests
}

func newFlagSet(name, summary string) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // we print errors and usage ourselves
	return &flagSet{FlagSet: fs, name: name, summary: summary, lookup: os.LookupEnv}
}

// envName returns the environment twin of a flag name.
func envName(flagName string) string {
	return "OUTRIDER_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// errHelp is returned by parse when -h or --help was asked for; the usage has
// already been written.
var errHelp = errors.New("help requested")

// parse parses args, then fills every flag not given on the command line from
// its environment twin. On -h it writes the usage to stdout and returns errHelp.
func (fs *flagSet) parse(args []string, stdout io.Writer) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.usage(stdout)
			return errHelp
		}
		return fmt.Errorf("%s: %s", fs.name, oneLine(err.Error()))
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q (flags start with --)", fs.name, fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		v, ok := fs.lookup(envName(f.Name))
		if !ok {
			return
		}
		if l, isList := f.Value.(*listFlag); isList {
			l.reset()
			for _, item := range splitList(v) {
				if err := l.Set(item); err != nil {
					errs = append(errs, fmt.Errorf("%s: invalid value %q in %s: %v", fs.name, item, envName(f.Name), err))
				}
			}
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("%s: invalid value %q in %s: %v", fs.name, v, envName(f.Name), err))
		}
	})
	return errors.Join(errs...)
}

// usage writes the summary and every flag with its default and env twin.
func (fs *flagSet) usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s [flags]\n\n%s\n\nFlags (each also from its environment variable; a flag given on the command line wins):\n", fs.name, fs.summary)
	var flags []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f) })
	sort.Slice(flags, func(i, j int) bool { return flags[i].Name < flags[j].Name })
	for _, f := range flags {
		name, usage := flag.UnquoteUsage(f)
		if name == "value" { // our own Value types: say what they take
			switch f.Value.(type) {
			case *nonNegDuration:
				name = "duration"
			case *listFlag:
				name = "string"
			}
		}
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintf(w, "%s\n        %s", line, usage)
		if def := f.DefValue; def != "" && def != "false" && def != "[]" {
			fmt.Fprintf(w, " (default %q)", def)
		}
		if _, isList := f.Value.(*listFlag); isList {
			fmt.Fprint(w, " (repeatable)")
		}
		fmt.Fprintf(w, "\n        env %s\n", envName(f.Name))
	}
}

// oneLine keeps the first line of a message: the flag package appends usage
// hints we do not want in a one-line error.
func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// listFlag is a repeatable string flag. On the command line each use adds one
// value (a value containing commas adds each item); from the environment the
// twin holds a comma-separated list. The first explicit use replaces the
// default.
type listFlag struct {
	values   []string
	explicit bool
}

func newListFlag(fs *flagSet, name, usage string, def ...string) *listFlag {
	l := &listFlag{values: def}
	fs.Var(l, name, usage)
	return l
}

func (l *listFlag) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(l.values, ",")
}

func (l *listFlag) Set(v string) error {
	if !l.explicit {
		l.reset()
	}
	l.values = append(l.values, splitList(v)...)
	return nil
}

func (l *listFlag) reset() { l.values, l.explicit = nil, true }

// durationFlag registers a duration flag that refuses negative values.
func durationFlag(fs *flagSet, name string, def time.Duration, usage string) *time.Duration {
	d := &def
	fs.Var(&nonNegDuration{d}, name, usage)
	return d
}

type nonNegDuration struct{ d *time.Duration }

func (n *nonNegDuration) String() string {
	if n == nil || n.d == nil {
		return ""
	}
	return n.d.String()
}

func (n *nonNegDuration) Set(v string) error {
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("not a duration (try 30s, 5m)")
	}
	if d < 0 {
		return fmt.Errorf("must not be negative")
	}
	*n.d = d
	return nil
}
