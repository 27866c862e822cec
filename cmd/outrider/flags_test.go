package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{
		"acme-email": "OUTRIDER_ACME_EMAIL", "listen": "OUTRIDER_LISTEN", "configsync-health-url": "OUTRIDER_CONFIGSYNC_HEALTH_URL",
	} {
		if got := envName(in); got != want {
			t.Errorf("envName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFlagPrecedenceAndLists(t *testing.T) {
	type result struct {
		Listen  string
		Domains []string
		Timeout time.Duration
		On      bool
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    result
		wantErr string
	}{
		{name: "defaults", want: result{Listen: ":443", Domains: []string{"d.example"}, Timeout: time.Minute}},
		{name: "env", env: map[string]string{"OUTRIDER_LISTEN": ":8443", "OUTRIDER_DOMAIN": "a.example, b.example", "OUTRIDER_TIMEOUT": "5s", "OUTRIDER_ON": "true"},
			want: result{Listen: ":8443", Domains: []string{"a.example", "b.example"}, Timeout: 5 * time.Second, On: true}},
		{name: "flag wins over env", args: []string{"--listen", ":9443", "--domain", "c.example", "--domain", "e.example"},
			env:  map[string]string{"OUTRIDER_LISTEN": ":8443", "OUTRIDER_DOMAIN": "a.example"},
			want: result{Listen: ":9443", Domains: []string{"c.example", "e.example"}, Timeout: time.Minute}},
		{name: "empty env turns an address off", env: map[string]string{"OUTRIDER_LISTEN": "", "OUTRIDER_DOMAIN": ""},
			want: result{Listen: "", Domains: nil, Timeout: time.Minute}},
		{name: "bad env value named", env: map[string]string{"OUTRIDER_TIMEOUT": "soon"}, wantErr: `invalid value "soon" in OUTRIDER_TIMEOUT`},
		{name: "negative duration", args: []string{"--timeout", "-1s"}, wantErr: "must not be negative"},
		{name: "stray argument", args: []string{"extra"}, wantErr: `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFlagSet("outrider proxy", "test")
			fs.lookup = func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			listen := fs.String("listen", ":443", "address")
			domains := newListFlag(fs, "domain", "name", "d.example")
			timeout := durationFlag(fs, "timeout", time.Minute, "timeout")
			on := fs.Bool("on", false, "switch")
			err := fs.parse(tt.args, &bytes.Buffer{})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("parse error = %v, want one line containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := result{*listen, domains.values, *timeout, *on}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("parsed flags mismatch (-want +got):\n%s", d)
			}
		})
	}
}

func TestUsageListsEnvTwins(t *testing.T) {
	var out bytes.Buffer
	err := runProxy(context.Background(), []string{"-h"}, &out, &out)
	if !errors.Is(err, errHelp) {
		t.Fatalf("runProxy -h = %v, want errHelp", err)
	}
	for _, want := range []string{"--upstream", "env OUTRIDER_UPSTREAM", "--domain", "(repeatable)", `(default ":443")`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q", want)
		}
	}
}

// helpOf returns the -h output of a subcommand (args such as "configsync publish").
func helpOf(t *testing.T, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	if code := run(context.Background(), append(args, "-h"), &out, &out); code != 0 {
		t.Fatalf("%v -h: exit %d: %s", args, code, out.String())
	}
	return out.String()
}

// everyHelp lists the flag sets of every subcommand.
var everyHelp = [][]string{{"proxy"}, {"configsync"}, {"configsync", "publish"}, {"configsync", "rollback"},
	{"top"}, {"demo"}, {"ca", "root"}, {"preflight"}, {"version"}}

// Issue #12: every subcommand's twins mean one thing. A variable used by
// two subcommands must be one of the flags that mean the same everywhere,
// or a configsync/top flag and its --configsync-/--top- twin in the proxy.
func TestEnvTwinsDoNotCollide(t *testing.T) {
	users := map[string][]string{} // env → "subcommand --flag"
	twin := regexp.MustCompile(`(?m)^  --(\S+).*\n.*\n        env (\S+)$`)
	for _, args := range everyHelp {
		help := helpOf(t, args...)
		if strings.Contains(help, "(repeatable) (repeatable)") {
			t.Errorf("%v -h says (repeatable) twice", args)
		}
		for _, m := range twin.FindAllStringSubmatch(help, -1) {
			users[m[2]] = append(users[m[2]], strings.Join(args, " ")+" --"+m[1])
		}
	}
	if len(users) < 50 {
		t.Fatalf("found only %d env twins in the help texts; the pattern is stale", len(users))
	}
	same := regexp.MustCompile(`^OUTRIDER_(LOG_FORMAT|LOG_LEVEL|ETCD_[A-Z_]+|STORAGE|DOMAIN|LISTEN|HTTP_LISTEN|ACME_DIRECTORY)$`)
	for env, us := range users {
		if len(us) < 2 || same.MatchString(env) {
			continue
		}
		for _, u := range us {
			// proxy --configsync-x and configsync --x; proxy --top-x and top --x.
			if !strings.HasPrefix(u, "proxy --configsync-") && !strings.HasPrefix(u, "configsync --") &&
				!strings.HasPrefix(u, "proxy --top-") && !strings.HasPrefix(u, "top --") {
				t.Errorf("%s is the twin of %q: one variable, several meanings", env, us)
				break
			}
		}
	}
	if us := users["OUTRIDER_INTERVAL"]; len(us) != 0 {
		t.Errorf("OUTRIDER_INTERVAL is the twin of %q; want none", us)
	}
	for env, want := range map[string]string{
		"OUTRIDER_CONFIGSYNC_INTERVAL": "configsync --interval", "OUTRIDER_TOP_INTERVAL": "top --interval",
		"OUTRIDER_TOP_TOKEN_FILE": "top --token-file", "OUTRIDER_LISTEN": "preflight --listen",
		"OUTRIDER_DEMO_LISTEN": "demo --listen", "OUTRIDER_LOG_LEVEL": "configsync --log-level",
	} {
		if !slices.Contains(users[env], want) {
			t.Errorf("%s is the twin of %q; want it to include %s", env, users[env], want)
		}
	}
	if us := users["OUTRIDER_CONFIGSYNC_DIR"]; len(us) != 2 {
		t.Errorf("OUTRIDER_CONFIGSYNC_DIR is the twin of %q; want proxy --configsync-dir and configsync --dir only (publish --dir is another dir)", us)
	}
}

func TestRunExitCodes(t *testing.T) {
	tests := []struct {
		args     []string
		wantCode int
		wantOut  string
	}{
		{[]string{}, exitUsage, "Usage: outrider <command>"},
		{[]string{"help"}, 0, "Commands:"},
		{[]string{"nope"}, exitUsage, `unknown command "nope"`},
		{[]string{"version", "--json"}, 0, `"go_version"`},
		{[]string{"proxy", "--hsts", "-5", "--upstream", "http://127.0.0.1:1"}, exitUsage, "--hsts"},
		{[]string{"proxy", "--upstream", "http://127.0.0.1:1", "--legacy-rewrites", "gzip"}, exitUsage, `unknown rewrite "gzip"`},
		{[]string{"proxy", "--upstream", "http://127.0.0.1:1", "--trusted-proxies", "10.0.0.0/40"}, exitUsage, "10.0.0.0/40"},
		{[]string{"proxy", "--log-format", "xml"}, exitUsage, `"xml"`},
		{[]string{"proxy"}, exitUsage, "--upstream is required"},
		// Issue #12: one prefix, flags named as typed, a suggestion for typos.
		{[]string{"proxy", "--lisen", ":1"}, exitUsage, "outrider proxy: unknown flag --lisen (did you mean --listen?)"},
		{[]string{"proxy", "-upstrem", "x"}, exitUsage, "unknown flag --upstrem (did you mean --upstream?)"},
		{[]string{"proxy", "--hsts", "1y"}, exitUsage, `invalid value "1y" for flag --hsts: want a whole, non-negative number of seconds (31536000 is one year)`},
		{[]string{"proxy", "--hsts", "-5", "--upstream", "http://127.0.0.1:1"}, exitUsage, "31536000"},
		{[]string{"proxy", "--max-body-bytes", "1k"}, exitUsage, `invalid value "1k" for flag --max-body-bytes: want a whole number`},
		{[]string{"proxy", "--access-log=maybe"}, exitUsage, "--access-log: want true or false"},
		{[]string{"proxy", "--listen"}, exitUsage, "flag --listen needs a value"},
		{[]string{"proxy", "--upstream", "http://127.0.0.1:1", "--tls-min-version", "1.1"}, exitUsage, `--tls-min-version "1.1": want 1.2`},
		{[]string{"proxy", "--upstream", "http://127.0.0.1:1", "--max-upstream-conns", "0"}, exitUsage, "--max-upstream-conns 0: must be at least 1"},
		{[]string{"proxy", "--upstream", "http://127.0.0.1:1", "--error-pages", "/nonexistent"}, exitUsage, "--error-pages"},
		{[]string{"prxy"}, exitUsage, `unknown command "prxy" (did you mean "proxy"?)`},
		{[]string{"preflight"}, exitUsage, "outrider preflight: give at least one --domain"},
		{[]string{"configsync", "--source", "ftp://x", "--dir", "/tmp/x"}, exitUsage, "outrider configsync: source"},
		// Issue #12: /top is not served to the network without a token.
		{[]string{"top", "--listen", "0.0.0.0:9903"}, exitUsage, "not a loopback address and there is no --token-file"},
		{[]string{"top", "--listen", ":9903"}, exitUsage, "--insecure-no-auth"},
		// With --insecure-no-auth the check passes (and --interval 0 stops it before it binds).
		{[]string{"top", "--listen", "0.0.0.0:0", "--insecure-no-auth", "--interval", "0"}, exitUsage, "--interval: must be positive"},
		{[]string{"proxy", "--upstream", "http://127.0.0.1:1", "--domain", "*.a.example"}, exitUsage, "give --acme-dns"},
		{[]string{"proxy", "--upstream", "http://127.0.0.1:1", "--domain", "a.example", "--acme-dns", "route53"}, exitUsage, `--acme-dns "route53": unknown provider`},
		{[]string{"proxy", "--upstream", "http://127.0.0.1:1", "--domain", "a.example", "--storage", "/nonexistent",
			"--acme-dns", "rfc2136", "--acme-dns-server", "127.0.0.1:53", "--acme-dns-tsig-key-file", "/nonexistent/tsig.key"}, exitUsage, "reading --acme-dns-tsig-key-file"},
		{[]string{"proxy", "--upstream", "http://127.0.0.1:1", "--domain", "a.example", "--storage", "/nonexistent",
			"--acme-dns", "exec:/nonexistent/hook"}, exitUsage, "--acme-dns exec:/nonexistent/hook: stat"},
		{[]string{"proxy", "--upstream", "http://127.0.0.1:1", "--on-demand-ask", "ftp://ask.example/"}, exitUsage, "not an http(s) URL"},
		{[]string{"proxy", "--upstream", "http://127.0.0.1:1", "--on-demand-ask", "http://127.0.0.1:1/", "--on-demand-rate", "0"}, exitUsage, "must be at least 1"},
		{[]string{"proxy", "--upstream", "http://127.0.0.1:1", "--on-demand-ask", "http://127.0.0.1:1/", "--tls-internal"}, exitUsage, "cannot be combined"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			code := run(context.Background(), tt.args, &out, &out)
			if code != tt.wantCode || !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("run(%q) = %d, output %q; want %d containing %q", tt.args, code, out.String(), tt.wantCode, tt.wantOut)
			}
			if strings.Contains(out.String(), "outrider: outrider") || strings.Contains(out.String(), ": configsync:") {
				t.Errorf("run(%q) output has two prefixes: %q", tt.args, out.String())
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for the lineBuffer's timer goroutine.
type syncBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	return s.b.Write(p)
}

func (s *syncBuffer) snapshot() (string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String(), s.writes
}

func TestLineBufferBatchesWholeLines(t *testing.T) {
	out := &syncBuffer{}
	b := &lineBuffer{w: out, flushEvery: time.Hour, maxBytes: 64}
	for i := range 10 {
		fmt.Fprintf(b, "line %02d of the access log\n", i) // 27 bytes each
	}
	got, writes := out.snapshot()
	// Two lines fit in 64 bytes: every third line flushes the two before it.
	if writes != 4 || strings.Count(got, "\n") != 8 {
		t.Errorf("after 10 lines: %d writes, %d lines out; want 4 writes of 2 whole lines", writes, strings.Count(got, "\n"))
	}
	b.Flush()
	if got, _ = out.snapshot(); strings.Count(got, "\n") != 10 || !strings.HasSuffix(got, "line 09 of the access log\n") {
		t.Errorf("after Flush: %q", got)
	}

	// The timer flushes a quiet buffer by itself.
	out = &syncBuffer{}
	b = &lineBuffer{w: out, flushEvery: 10 * time.Millisecond, maxBytes: 1 << 10}
	io.WriteString(b, "one\n")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if got, _ := out.snapshot(); got == "one\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a pending line was never flushed by the timer")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
