// Package integration holds outrider's end-to-end tests: the real binary,
// real sockets, real processes (the stand-in app, Pebble, etcd). Every test
// here skips under -short.
package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bins are the binaries built once by TestMain, with -race.
var bins struct {
	outrider string
	testapp  string
	dir      string
}

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "outrider-it-bins-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins.dir = dir
	bins.outrider = filepath.Join(dir, "outrider")
	bins.testapp = filepath.Join(dir, "testapp")
	var wg sync.WaitGroup
	var errs [2]error
	for i, b := range []struct{ out, pkg string }{
		{bins.outrider, "github.com/outrider-dev/outrider/cmd/outrider"},
		{bins.testapp, "github.com/outrider-dev/outrider/integration/testapp"},
	} {
		wg.Go(func() {
			out, err := exec.Command("go", "build", "-race", "-o", b.out, b.pkg).CombinedOutput()
			if err != nil {
				errs[i] = fmt.Errorf("building %s: %v\n%s", b.pkg, err, out)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs[:]...); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: runs without -short")
	}
}

// inCI reports whether we run in CI, where a missing tool is a failure.
func inCI() bool { return os.Getenv("CI") == "true" }

// needTool returns the path of an external tool. Locally a missing tool
// skips the test; in CI it fails it, so CI never goes green by skipping.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if inCI() {
			t.Fatalf("%s is required in CI but not installed (.ci/run installs it)", name)
		}
		t.Skipf("%s not installed; skipping (CI installs it)", name)
	}
	return p
}

// needRoot skips locally, and fails in CI, when not running as root.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if inCI() {
			t.Fatal("this test needs root, and CI runs as root")
		}
		t.Skip("needs root")
	}
}

// proc is a child process under test.
type proc struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	ready map[string]any // fields of the "listening" log line

	mu     sync.Mutex
	out    bytes.Buffer // stderr, then stdout, as lines arrive
	lines  []string
	notify chan struct{}

	done    chan struct{}
	waitErr error
	stopped bool // stop or kill was called: no cleanup check
}

type procSpec struct {
	name string
	bin  string
	args []string
	env  []string // added to the environment
	// noReady: do not wait for a {"msg":"listening"} line (the startup
	// line; readiness itself is /readyz, logged as "ready" when it changes).
	noReady bool
	// readyTimeout: default 20s (race-built binaries start slowly on 2 cores).
	readyTimeout time.Duration
	// exitCode is the code expected when stopped by SIGINT; default 0.
	exitCode int
}

// start starts a process. Its stderr and stdout are captured; a JSON line
// with "msg":"listening" is awaited unless spec.noReady. In t.Cleanup it is
// stopped with SIGINT and must exit with spec.exitCode; its output is logged
// if the test failed.
func start(t *testing.T, spec procSpec) *proc {
	t.Helper()
	// Not t.Context(): it is cancelled before Cleanup runs, which would send
	// a second SIGINT while the process drains. Cleanup stops it instead.
	cmd := exec.CommandContext(context.WithoutCancel(t.Context()), spec.bin, spec.args...)
	cmd.Env = append(os.Environ(), spec.env...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	p := &proc{t: t, name: spec.name, cmd: cmd, notify: make(chan struct{}, 1), done: make(chan struct{})}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", spec.name, err)
	}
	var readers sync.WaitGroup
	for _, r := range []io.Reader{stderr, stdout} {
		readers.Go(func() {
			sc := bufio.NewScanner(r)
			sc.Buffer(make([]byte, 64<<10), 4<<20)
			for sc.Scan() {
				p.mu.Lock()
				p.lines = append(p.lines, sc.Text())
				p.out.WriteString(sc.Text() + "\n")
				p.mu.Unlock()
				select {
				case p.notify <- struct{}{}:
				default:
				}
			}
		})
	}
	go func() {
		readers.Wait()
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.stopped {
			p.stopExpect(spec.exitCode)
		}
		if t.Failed() {
			t.Logf("--- output of %s:\n%s", p.name, p.output())
		}
	})
	if !spec.noReady {
		timeout := spec.readyTimeout
		if timeout == 0 {
			timeout = 20 * time.Second
		}
		line, err := p.waitLine(timeout, func(l string) bool { return strings.Contains(l, `"msg":"listening"`) })
		if err != nil {
			t.Fatalf("%s did not start listening: %v\n%s", p.name, err, p.output())
		}
		if err := json.Unmarshal([]byte(line), &p.ready); err != nil {
			t.Fatalf("%s: listening line is not JSON: %q", p.name, line)
		}
	}
	return p
}

// startOutrider runs the outrider binary with JSON logs and waits for its
// listening line.
func startOutrider(t *testing.T, args ...string) *proc {
	t.Helper()
	return start(t, procSpec{name: "outrider " + args[0], bin: bins.outrider, args: append(args, "--log-format=json")})
}

// startApp runs the stand-in legacy app on a free loopback port.
func startApp(t *testing.T, args ...string) *proc {
	t.Helper()
	return start(t, procSpec{name: "testapp", bin: bins.testapp, args: append([]string{"--listen", "127.0.0.1:0"}, args...)})
}

// addr returns a field of the listening line, failing when it is missing.
func (p *proc) addr(key string) string {
	p.t.Helper()
	v, _ := p.ready[key].(string)
	if v == "" {
		p.t.Fatalf("%s: listening line has no %q: %v", p.name, key, p.ready)
	}
	return v
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// waitLine waits for an output line (any so far, or a new one) matching f.
func (p *proc) waitLine(timeout time.Duration, f func(string) bool) (string, error) {
	deadline := time.After(timeout)
	seen := 0
	for {
		p.mu.Lock()
		for ; seen < len(p.lines); seen++ {
			if f(p.lines[seen]) {
				l := p.lines[seen]
				p.mu.Unlock()
				return l, nil
			}
		}
		p.mu.Unlock()
		select {
		case <-p.notify:
		case <-p.done:
			p.mu.Lock()
			n := len(p.lines)
			p.mu.Unlock()
			if seen == n {
				return "", fmt.Errorf("process exited (%v)", p.waitErr)
			}
		case <-deadline:
			return "", fmt.Errorf("no matching line within %v", timeout)
		}
	}
}

// waitLog fails the test unless a line containing substr appears in time.
func (p *proc) waitLog(timeout time.Duration, substr string) string {
	p.t.Helper()
	l, err := p.waitLine(timeout, func(l string) bool { return strings.Contains(l, substr) })
	if err != nil {
		p.t.Fatalf("%s: waiting for log %q: %v", p.name, substr, err)
	}
	return l
}

// signal sends sig to the process.
func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signalling %s: %v", p.name, err)
	}
}

// stop sends SIGINT and requires a clean exit 0 within 30s.
func (p *proc) stop() { p.t.Helper(); p.stopExpect(0) }

func (p *proc) stopExpect(code int) {
	p.t.Helper()
	p.stopped = true
	select {
	case <-p.done:
	default:
		p.cmd.Process.Signal(os.Interrupt)
	}
	got := p.wait(30 * time.Second)
	if got != code {
		p.t.Errorf("%s exited with code %d, want %d (%v)", p.name, got, code, p.waitErr)
	}
}

// wait waits for exit and returns the exit code (-1 when killed by a signal).
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
		p.t.Errorf("%s did not exit within %v; killed", p.name, timeout)
	}
	return p.cmd.ProcessState.ExitCode()
}

// kill sends SIGKILL and waits; no exit code is expected.
func (p *proc) kill() {
	p.stopped = true
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// waitFor polls f with backoff until it returns nil, failing the test with
// f's last error after timeout.
func waitFor(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	delay := 10 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(delay)
		delay = min(delay*2, 250*time.Millisecond)
	}
}

// waitStatusCode waits until GET url with c answers want.
func waitStatusCode(t *testing.T, c *http.Client, url string, want int) {
	t.Helper()
	waitFor(t, 15*time.Second, func() error {
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			return fmt.Errorf("status %d, want %d", resp.StatusCode, want)
		}
		return nil
	})
}

// clientFor returns an HTTPS client that dials addr whatever the URL's
// host, trusts roots, and negotiates HTTP/2 when h2 is true.
func clientFor(addr string, roots *x509.CertPool, h2 bool) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		},
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: h2,
		DisableKeepAlives: false,
	}
	if !h2 {
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// plainClient is an HTTP client for admin endpoints and the app.
var plainClient = &http.Client{Timeout: 10 * time.Second}

// get fetches url with c and returns status and body.
func get(t *testing.T, c *http.Client, url string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "Host") {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, string(b), resp.Header
}

// getJSON fetches url and decodes a JSON body into v, returning the status.
func getJSON(t *testing.T, c *http.Client, url string, v any, hdr ...string) int {
	t.Helper()
	code, body, _ := get(t, c, url, hdr...)
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %d, body is not JSON: %v: %q", url, code, err, body)
	}
	return code
}

// metricValue returns the value of the first sample of a metric exposition
// line that starts with series (name plus optional labels), or -1.
func metricValue(metrics, series string) float64 {
	for _, l := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(l, series+" ") {
			var v float64
			fmt.Sscanf(l[len(series)+1:], "%g", &v)
			return v
		}
	}
	return -1
}
