package topapi

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzParseQuery: any query string either parses into a known sort and a
// non-negative limit, or is refused with a one-line error; what parses
// orders and trims a process list without losing or inventing entries.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"", "sort=cpu", "sort=mem&limit=5", "sort=pid&limit=1", "limit=0", "limit=-1",
		"sort=CPU", "limit=99999999999999999999", "sort=mem&sort=pid", "limit=%00", "sort=%ZZ", ";sort=pid"} {
		f.Add(s)
	}
	procs := []Process{{PID: 7, RSSBytes: 10}, {PID: 3, RSSBytes: 30}, {PID: 5, RSSBytes: 30}, {PID: 1, RSSBytes: 0}}
	f.Fuzz(func(t *testing.T, raw string) {
		r := &http.Request{URL: &url.URL{Path: "/top", RawQuery: raw}}
		q, err := parseQuery(r)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("parseQuery(%q): multi-line error %q", raw, err)
			}
			return
		}
		switch q.sort {
		case "cpu", "mem", "pid":
		default:
			t.Fatalf("parseQuery(%q): sort %q", raw, q.sort)
		}
		if q.limit < 0 {
			t.Fatalf("parseQuery(%q): limit %d", raw, q.limit)
		}
		out := q.apply(procs)
		want := len(procs)
		if q.limit > 0 {
			want = min(want, q.limit)
		}
		if len(out) != want {
			t.Fatalf("%+v applied to %d processes gave %d, want %d", q, len(procs), len(out), want)
		}
		seen := map[int]bool{}
		for i, p := range out {
			if seen[p.PID] {
				t.Fatalf("pid %d listed twice", p.PID)
			}
			seen[p.PID] = true
			if i == 0 {
				continue
			}
			prev := out[i-1]
			if q.sort == "pid" && prev.PID > p.PID || q.sort == "mem" && prev.RSSBytes < p.RSSBytes {
				t.Fatalf("sort=%s out of order: %+v", q.sort, out)
			}
		}
	})
}

// FuzzRedact: any command line (NUL-separated, as in /proc/PID/cmdline)
// redacts without panicking to as many arguments, and a secret given after
// --password never shows.
func FuzzRedact(f *testing.F) {
	for _, s := range []string{"app\x00--password=x", "sh\x00-c\x00mysql -px && curl -H 'Authorization: Bearer y'",
		"curl\x00-u\x00a:b", "x\x00'unterminated \"quote", "sh\x00-c\x00a\\", "redis-cli\x00AUTH", "mc\x00alias\x00set",
		"a\x00{\"password\": \"p\"", "a\x00password: \x00--", "htpasswd\x00-b", "x\x00--\x00--\x00mysql"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cmdline string) {
		args := strings.Split(cmdline, "\x00")
		got := Redact(args)
		if len(got) != len(args) {
			t.Fatalf("Redact(%q) = %d arguments, want %d", args, len(got), len(args))
		}
		const secret = "fuzz-S3CRET-value"
		withSecret := append(append([]string{}, args...), "--password", secret)
		for _, a := range Redact(withSecret) {
			if strings.Contains(a, secret) {
				t.Fatalf("Redact(%q) shows the --password value", withSecret)
			}
		}
	})
}
