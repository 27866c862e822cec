package configsync

import (
	"errors"
	"path"
	"strings"
	"testing"
)

// FuzzParseBundle: any input either parses into a snapshot whose every path
// is safe, or is refused with one of the package's errors; never a panic.
func FuzzParseBundle(f *testing.F) {
	for _, s := range []string{
		`{"version":"v1","files":{"app.conf":"x=1\n"}}`,
		`{"files":{"a/b.conf":{"content":"AAE=","encoding":"base64","mode":"0600"}}}`,
		`{"files":{"../x":"y"}}`, `{"files":{}}`, `{"files":{"a":"1","a/b":"2"}}`, `{"files":`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseBundle(data)
		if err != nil {
			if !errors.Is(err, ErrEmpty) && !errors.Is(err, ErrInvalidBundle) && !errors.Is(err, ErrUnsafePath) {
				t.Fatalf("ParseBundle error %v wraps none of the package errors", err)
			}
			if strings.Contains(err.Error(), "\n") && !strings.Contains(err.Error(), "configsync:") {
				t.Fatalf("odd error: %q", err)
			}
			return
		}
		if len(s.Files) == 0 {
			t.Fatal("accepted an empty bundle")
		}
		for n, f := range s.Files {
			if CheckPath(n) != nil || f.Mode > 0o777 {
				t.Fatalf("accepted unsafe file %q mode %o", n, f.Mode)
			}
		}
	})
}

// FuzzCheckPath: an accepted path never leaves the directory once joined.
func FuzzCheckPath(f *testing.F) {
	for _, s := range []string{"app.conf", "a/b", "../x", "/etc", "a/../b", "..data", "a//b", ".", "a/./b", ".env"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if CheckPath(name) != nil {
			return
		}
		joined := path.Join("/base", name)
		if !strings.HasPrefix(joined, "/base/") {
			t.Fatalf("CheckPath accepted %q, which joins to %q", name, joined)
		}
		for _, el := range strings.Split(name, "/") {
			if el == "" || el == "." || strings.HasPrefix(el, "..") {
				t.Fatalf("CheckPath accepted %q with element %q", name, el)
			}
		}
	})
}

// FuzzParseNotifier: any spec parses into a usable notifier or a
// ErrBadNotifySpec error; never a panic.
func FuzzParseNotifier(f *testing.F) {
	for _, s := range []string{
		"signal:HUP:pidfile=/run/app.pid", "signal:USR1:process=nginx", "http:POST:http://127.0.0.1:8080/-/reload",
		`exec:/bin/sh -c "kill -HUP 1"`, "signal:HUP", "exec:'", "http:GET:", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		n, err := ParseNotifier(spec)
		if err != nil {
			if !errors.Is(err, ErrBadNotifySpec) {
				t.Fatalf("ParseNotifier(%q) error %v is not ErrBadNotifySpec", spec, err)
			}
			return
		}
		switch n.Kind {
		case NotifySignal:
			if n.Signal == 0 || (n.Pidfile == "") == (n.Process == "") {
				t.Fatalf("ParseNotifier(%q) = %+v: want one target and a signal", spec, n)
			}
		case NotifyHTTP:
			if n.Method == "" || n.URL == "" {
				t.Fatalf("ParseNotifier(%q) = %+v", spec, n)
			}
		case NotifyExec:
			if len(n.Argv) == 0 {
				t.Fatalf("ParseNotifier(%q) = %+v", spec, n)
			}
		default:
			t.Fatalf("ParseNotifier(%q) kind %q", spec, n.Kind)
		}
	})
}
