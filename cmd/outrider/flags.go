package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// flagSet wraps flag.FlagSet with the rules every outrider subcommand shares:
// each flag has an environment twin (see envName), a flag given on the
// command line wins over its twin, repeatable flags take a comma-separated
// list from the twin, and errors come back as one line that names flags
// with two dashes and suggests the closest one for a typo.
type flagSet struct {
	*flag.FlagSet
	name    string // "outrider proxy"
	summary string
	scope   string                      // "" for proxy, else "CONFIGSYNC_", "TOP_", …
	shared  map[string]bool             // flags whose twin has no scope
	set     map[string]bool             // given on the command line or by the environment
	lookup  func(string) (string, bool) // os.LookupEnv, replaceable in tests
}

func newFlagSet(name, summary string) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // we print errors and usage ourselves
	scope := strings.TrimPrefix(name, "outrider")
	scope = strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(scope), " ", "_"))
	if scope == "PROXY" || scope == "" {
		scope = "" // the main subcommand: OUTRIDER_ + the flag name, as SPEC fixes it
	} else {
		scope += "_"
	}
	return &flagSet{FlagSet: fs, name: name, summary: summary, scope: scope,
		shared: map[string]bool{}, set: map[string]bool{}, lookup: os.LookupEnv}
}

// share marks flags that mean the same in every subcommand (logging, etcd
// credentials, storage): their twin is OUTRIDER_ + the name, with no
// subcommand in it.
func (fs *flagSet) share(names ...string) {
	for _, n := range names {
		fs.shared[n] = true
	}
}

// envName returns the environment twin of a flag: OUTRIDER_ + the
// subcommand (none for proxy) + the flag name, upper-cased, '-' → '_'. So
// `outrider configsync --interval` is OUTRIDER_CONFIGSYNC_INTERVAL, the
// same variable as `outrider proxy --configsync-interval`, and never
// `outrider top --interval` (OUTRIDER_TOP_INTERVAL). Shared flags have no
// subcommand part.
func (fs *flagSet) envName(flagName string) string {
	if fs.shared[flagName] {
		return envName(flagName)
	}
	return "OUTRIDER_" + fs.scope + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// envName is the twin of a flag of `outrider proxy`, or of a shared flag.
func envName(flagName string) string {
	return "OUTRIDER_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// isSet reports whether the flag was given on the command line or by its
// environment twin (rather than left at its default).
func (fs *flagSet) isSet(name string) bool { return fs.set[name] }

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
		return fs.explain(err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) { fs.set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if fs.set[f.Name] {
			return
		}
		env := fs.envName(f.Name)
		v, ok := fs.lookup(env)
		if !ok {
			return
		}
		fs.set[f.Name] = true
		if l, isList := f.Value.(*listFlag); isList {
			l.reset()
			for _, item := range splitList(v) {
				if err := l.Set(item); err != nil {
					errs = append(errs, fmt.Errorf("invalid value %q in %s: %v", item, env, err))
				}
			}
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("invalid value %q in %s: %s", v, env, valueError(f, err)))
		}
	})
	return errors.Join(errs...)
}

// explain rewrites an error of the flag package into one line that names
// flags as they are typed (--name) and says what a value should be.
func (fs *flagSet) explain(err error) error {
	msg := oneLine(err.Error())
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		name = strings.TrimLeft(name, "-")
		out := fmt.Sprintf("unknown flag --%s", name)
		if s := fs.suggest(name); s != "" {
			out += fmt.Sprintf(" (did you mean --%s?)", s)
		}
		return errors.New(out + "; see -h")
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: "); ok {
		return fmt.Errorf("flag --%s needs a value", strings.TrimLeft(name, "-"))
	}
	// "invalid value "x" for flag -name: …" and "invalid boolean value …".
	for _, pre := range []string{"invalid value ", "invalid boolean value "} {
		rest, ok := strings.CutPrefix(msg, pre)
		if !ok {
			continue
		}
		val, rest, _ := strings.Cut(rest, " for ")
		rest = strings.TrimPrefix(strings.TrimPrefix(rest, "flag "), "-")
		name, _, _ := strings.Cut(rest, ":")
		if f := fs.Lookup(name); f != nil {
			cause := errors.New(strings.TrimSpace(strings.TrimPrefix(rest, name+":")))
			return fmt.Errorf("invalid value %s for flag --%s: %s", val, name, valueError(f, cause))
		}
	}
	return errors.New(strings.ReplaceAll(msg, " -", " --"))
}

// valueError says what a flag's value should be when the flag package's own
// words ("parse error") would not tell.
func valueError(f *flag.Flag, err error) string {
	type wanter interface{ want() string }
	if w, ok := f.Value.(wanter); ok {
		return w.want()
	}
	if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
		return "want true or false"
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "parse error"), strings.Contains(msg, "invalid syntax"):
		return "want a whole number"
	case strings.Contains(msg, "out of range"):
		return "number out of range"
	}
	return msg
}

// suggest returns the defined flag closest to name, or "" when none is
// close enough to be a typo of it.
func (fs *flagSet) suggest(name string) string {
	best, bestD := "", 3 // at most two edits away
	fs.VisitAll(func(f *flag.Flag) {
		d := editDistance(name, f.Name)
		if strings.HasPrefix(f.Name, name) && len(name) >= 3 {
			d = min(d, 1)
		}
		if d < bestD || d == bestD && f.Name < best {
			best, bestD = f.Name, d
		}
	})
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
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
			case *secondsFlag:
				name = "seconds"
			case *sizeFlag:
				name = "size"
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
		if _, isList := f.Value.(*listFlag); isList && !strings.Contains(usage, "(repeatable)") {
			fmt.Fprint(w, " (repeatable)")
		}
		fmt.Fprintf(w, "\n        env %s\n", fs.envName(f.Name))
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

// secondsFlag is a whole number of seconds, such as an HSTS max-age.
type secondsFlag struct {
	n    *int
	hint string // an example, e.g. "31536000 is one year"
}

func secondsVar(fs *flagSet, name string, def int, hint, usage string) *int {
	n := &def
	fs.Var(&secondsFlag{n: n, hint: hint}, name, usage)
	return n
}

func (s *secondsFlag) String() string {
	if s == nil || s.n == nil {
		return ""
	}
	return strconv.Itoa(*s.n)
}

func (s *secondsFlag) Set(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return errors.New(s.want())
	}
	*s.n = n
	return nil
}

func (s *secondsFlag) want() string {
	return "want a whole, non-negative number of seconds (" + s.hint + ")"
}
