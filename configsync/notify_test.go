package configsync

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseNotifier(t *testing.T) {
	tests := []struct {
		in      string
		want    *Notifier
		wantErr bool
	}{
		{in: "signal:HUP:pidfile=/run/app.pid", want: &Notifier{Kind: NotifySignal, Signal: syscall.SIGHUP, Pidfile: "/run/app.pid"}},
		{in: "signal:SIGUSR1:process=nginx", want: &Notifier{Kind: NotifySignal, Signal: syscall.SIGUSR1, Process: "nginx"}},
		{in: "http:POST:http://127.0.0.1:8080/-/reload", want: &Notifier{Kind: NotifyHTTP, Method: "POST", URL: "http://127.0.0.1:8080/-/reload"}},
		{in: `exec:/bin/sh -c "kill -HUP 1"`, want: &Notifier{Kind: NotifyExec, Argv: []string{"/bin/sh", "-c", "kill -HUP 1"}}},
		{in: "signal:HUP", wantErr: true},
		{in: "signal:KILLALL:pidfile=/x", wantErr: true},
		{in: "signal:HUP:pidfile=relative.pid", wantErr: true},
		{in: "signal:HUP:process=/usr/bin/app", wantErr: true},
		{in: "signal:HUP:process=", wantErr: true},
		{in: "signal:HUP:pid=12", wantErr: true},
		{in: "http:post:http://x/", wantErr: true},
		{in: "http:POST:ftp://x/", wantErr: true},
		{in: "http:POST", wantErr: true},
		{in: "exec:", wantErr: true},
		{in: `exec:/bin/echo "unterminated`, wantErr: true},
		{in: "webhook:http://x", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseNotifier(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrBadNotifySpec) {
					t.Errorf("ParseNotifier(%q) error = %v, want ErrBadNotifySpec", tt.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseNotifier(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(Notifier{}), cmpIgnoreSpec); diff != "" {
				t.Errorf("ParseNotifier(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

var cmpIgnoreSpec = cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".spec" }, cmp.Ignore())

func TestParseNotifierHidesURLSecrets(t *testing.T) {
	n, err := ParseNotifier("http:POST:http://user:pw@127.0.0.1/-/reload?token=abc")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := n.String(), "http:POST:http://127.0.0.1/-/reload"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestSplitCommand(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"nginx -t -c {dir}/nginx.conf", []string{"nginx", "-t", "-c", "{dir}/nginx.conf"}},
		{`sh -c 'test -s {dir}/app.conf'`, []string{"sh", "-c", "test -s {dir}/app.conf"}},
		{`a "b \"c\" d" e\ f`, []string{"a", `b "c" d`, "e f"}},
		{`a ''`, []string{"a", ""}},
	}
	for _, tt := range tests {
		got, err := splitCommand(tt.in)
		if err != nil || !cmp.Equal(got, tt.want) {
			t.Errorf("splitCommand(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "   ", `a 'b`, `a "b`, `a \`} {
		if _, err := splitCommand(bad); err == nil {
			t.Errorf("splitCommand(%q) = nil error, want one", bad)
		}
	}
}

func TestParseProcStat(t *testing.T) {
	line := "4242 (my (odd) app) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 987654 1000 200 18446744073709551615\n"
	got, err := parseProcStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := procStat{comm: "my (odd) app", state: 'S', startTicks: 987654}
	if got != want {
		t.Errorf("parseProcStat = %+v, want %+v", got, want)
	}
	if _, err := parseProcStat([]byte("garbage")); err == nil {
		t.Error("parseProcStat(garbage) = nil error")
	}
}

// startSleeper starts a child with a unique executable name.
func startSleeper(t *testing.T, name string) *exec.Cmd {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	bin := filepath.Join(t.TempDir(), name)
	data, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func TestSignalProcessByName(t *testing.T) {
	name := "cs-sleeper-" + strconv.Itoa(os.Getpid())
	n, _ := ParseNotifier("signal:CONT:process=" + name)
	if _, _, err := n.findPID(); !errors.Is(err, ErrNoProcess) {
		t.Fatalf("findPID with no process = %v, want ErrNoProcess", err)
	}
	a := startSleeper(t, name)
	waitUntil(t, func() bool { pid, _, err := n.findPID(); return err == nil && pid == a.Process.Pid })
	startSleeper(t, name)
	waitUntil(t, func() bool { _, _, err := n.findPID(); return errors.Is(err, ErrNoProcess) })
}

func TestSignalPidfileChecks(t *testing.T) {
	dir := t.TempDir()
	pf := filepath.Join(dir, "app.pid")
	n, _ := ParseNotifier("signal:CONT:pidfile=" + pf)
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(pf, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a := startSleeper(t, "cs-pidfile-app")
	write(strconv.Itoa(a.Process.Pid) + "\n")
	if pid, _, err := n.findPID(); err != nil || pid != a.Process.Pid {
		t.Errorf("findPID() = %d, %v; want %d", pid, err, a.Process.Pid)
	}
	for _, bad := range []string{"", "abc", "1", strconv.Itoa(os.Getpid()), "999999999"} {
		write(bad)
		if _, _, err := n.findPID(); !errors.Is(err, ErrNoProcess) {
			t.Errorf("pidfile %q: findPID() = %v, want ErrNoProcess", bad, err)
		}
	}
	// A pidfile older than its process was not written by it: pid reuse.
	write(strconv.Itoa(a.Process.Pid))
	old := time.Now().Add(-time.Hour)
	os.Chtimes(pf, old, old)
	if _, _, err := n.findPID(); !errors.Is(err, ErrNoProcess) {
		t.Errorf("stale pidfile: findPID() = %v, want ErrNoProcess", err)
	}
}

func waitUntil(t *testing.T, f func() bool) {
	t.Helper()
	// Generous: under -race with the whole suite running, a rollback through
	// several versions takes seconds.
	deadline := time.Now().Add(15 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 15s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
