package integration

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Faults: the app crashes or hangs, the config API misbehaves, the disk is
// full, outrider itself is killed. Each time outrider must answer sensibly,
// keep what was good, and recover by itself. The ACME server down during a
// renewal is TestACMEServerDownDuringRenewal in acme_test.go.

// codeTally counts status codes (0 = transport error) from a traffic loop.
type codeTally struct {
	mu    sync.Mutex
	codes map[int]int
}

func (c *codeTally) add(code int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.codes == nil {
		c.codes = map[int]int{}
	}
	c.codes[code]++
}

func (c *codeTally) snapshot() map[int]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[int]int{}
	for k, v := range c.codes {
		out[k] = v
	}
	return out
}

// traffic sends GET path through client every 20ms until the test ends or
// stop is called, tallying status codes.
func traffic(t *testing.T, client *http.Client, url string) (tally *codeTally, stop func()) {
	tally = &codeTally{}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			resp, err := client.Get(url)
			if err != nil {
				tally.add(0)
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			tally.add(resp.StatusCode)
		}
	})
	var once sync.Once
	stop = func() { once.Do(func() { close(done); wg.Wait() }) }
	t.Cleanup(stop)
	return tally, stop
}

// TestFaultAppCrashUnderTraffic SIGKILLs the app while requests flow (one
// of them in flight at the app): clients get 502s, never a hang or a
// half-response passed off as success, and once the app is back on its
// address the same outrider process serves 200s again.
func TestFaultAppCrashUnderTraffic(t *testing.T) {
	skipShort(t)
	// With --upstream-wait off: the 502s are the point here. With it on,
	// TestAppRestartHoldsRequests shows the same crash answered with 200s.
	e := startProxy(t, "--access-log=false", "--upstream-wait", "0")
	pxPid := e.px.cmd.Process.Pid
	addr := e.app.addr("addr")
	tally, stop := traffic(t, e.h2, "https://app.example/")
	waitStatusCode(t, e.h2, "https://app.example/", 200)

	inflight := make(chan int, 1)
	go func() {
		resp, err := e.h1.Get("https://app.example/slow?delay=5s")
		if err != nil {
			inflight <- 0
			return
		}
		resp.Body.Close()
		inflight <- resp.StatusCode
	}()
	waitFor(t, 10*time.Second, func() error {
		var seen []struct{ Path string }
		getJSON(t, plainClient, "http://"+addr+"/-/seen", &seen)
		for _, s := range seen {
			if s.Path == "/slow" {
				return nil
			}
		}
		return fmt.Errorf("app has not seen /slow yet")
	})
	e.app.kill()
	if code := <-inflight; code != http.StatusBadGateway {
		t.Errorf("request in flight when the app died: %d, want 502", code)
	}
	waitStatusCode(t, e.h2, "https://app.example/", http.StatusBadGateway)
	time.Sleep(300 * time.Millisecond) // some traffic against the dead app

	start(t, procSpec{name: "testapp restarted", bin: bins.testapp, args: []string{"--listen", addr}})
	waitStatusCode(t, e.h2, "https://app.example/", 200)
	time.Sleep(300 * time.Millisecond)
	stop()
	codes := tally.snapshot()
	t.Logf("status codes during crash and restart: %v", codes)
	for code, n := range codes {
		if code != 200 && code != http.StatusBadGateway {
			t.Errorf("%d answers with status %d, want only 200 and 502", n, code)
		}
	}
	if codes[http.StatusBadGateway] == 0 || codes[200] == 0 {
		t.Errorf("want both 502s (app down) and 200s, got %v", codes)
	}
	if e.px.cmd.ProcessState != nil || e.px.cmd.Process.Pid != pxPid {
		t.Error("outrider was restarted")
	}
}

// TestFaultAppHangs freezes the app with SIGSTOP: the kernel still accepts
// its connections, nothing answers. Each request gets 504 within
// --upstream-timeout; after SIGCONT the app answers again.
func TestFaultAppHangs(t *testing.T) {
	skipShort(t)
	e := startProxy(t, "--upstream-timeout", "1s", "--access-log=false")
	waitStatusCode(t, e.h2, "https://app.example/", 200)
	e.app.signal(syscall.SIGSTOP)
	t.Cleanup(func() { e.app.cmd.Process.Signal(syscall.SIGCONT) })

	var wg sync.WaitGroup
	var worst atomic.Int64
	codes := make([]int, 20)
	for i := range codes {
		wg.Go(func() {
			start := time.Now()
			resp, err := e.h2.Get(fmt.Sprintf("https://app.example/echo?i=%d", i))
			if err == nil {
				resp.Body.Close()
				codes[i] = resp.StatusCode
			}
			d := int64(time.Since(start))
			for w := worst.Load(); d > w && !worst.CompareAndSwap(w, d); w = worst.Load() {
			}
		})
	}
	wg.Wait()
	t.Logf("20 concurrent requests to a frozen app: codes %v, slowest %v", codes, time.Duration(worst.Load()).Round(time.Millisecond))
	for _, c := range codes {
		if c != http.StatusGatewayTimeout {
			t.Errorf("frozen app: %d, want 504", c)
		}
	}
	// Generous bound: 1s timeout, race-built binaries, 2 cores.
	if d := time.Duration(worst.Load()); d > 6*time.Second {
		t.Errorf("slowest 504 after %v, want about the 1s --upstream-timeout", d)
	}
	if code, _, _ := get(t, plainClient, "http://"+e.admin+"/healthz"); code != 200 {
		t.Errorf("outrider /healthz = %d while the app hangs", code)
	}
	e.app.signal(syscall.SIGCONT)
	waitStatusCode(t, e.h2, "https://app.example/", 200)
}

// misbehavingAPI is a config API whose answer the test switches between a
// good bundle and many bad ones.
type misbehavingAPI struct {
	mu   sync.Mutex
	mode string
	good []byte
	srv  *httptest.Server
	hits atomic.Int64
}

func newMisbehavingAPI(t *testing.T) *misbehavingAPI {
	a := &misbehavingAPI{mode: "good"}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.hits.Add(1)
		a.mu.Lock()
		mode, good := a.mode, a.good
		a.mu.Unlock()
		switch mode {
		case "good":
			w.Header().Set("Content-Type", "application/json")
			w.Write(good)
		case "slow-good": // a valid bundle, trickled over two seconds
			w.Header().Set("Content-Type", "application/json")
			for i := 0; i < len(good); i += len(good)/8 + 1 {
				w.Write(good[i:min(len(good), i+len(good)/8+1)])
				w.(http.Flusher).Flush()
				time.Sleep(250 * time.Millisecond)
			}
		case "slow-truncated": // half a bundle, a stall, then the connection drops
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", fmt.Sprint(len(good)))
			w.Write(good[:len(good)/2])
			w.(http.Flusher).Flush()
			time.Sleep(2 * time.Second)
			panic(http.ErrAbortHandler)
		case "truncated":
			w.Header().Set("Content-Type", "application/json")
			w.Write(good[:len(good)/2])
		case "empty":
			w.Header().Set("Content-Type", "application/json")
		case "html":
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, "<html><body>502 Bad Gateway (from a load balancer)</body></html>")
		case "wrong-shape":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"data": [1, 2, 3], "version": 7}`)
		case "escape":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"version": "evil", "files": {"app.conf": "greeting=evil\n", "../escape.conf": "x"}}`)
		case "binary":
			w.Write(bytes.Repeat([]byte{0, 0xff, 0x13}, 1000))
		case "500":
			http.Error(w, "internal error", http.StatusInternalServerError)
		}
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *misbehavingAPI) set(mode string, version string, files map[string]string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.mode = mode
	if files != nil {
		a.good, _ = json.Marshal(map[string]any{"version": version, "files": files})
	}
}

// TestFaultConfigAPIMisbehaves points configsync at an API that goes slow,
// answers garbage of every kind, errors, and finally stops listening. The
// last good version stays on disk and in the app throughout, /status names
// the problem, and a good answer afterwards is applied.
func TestFaultConfigAPIMisbehaves(t *testing.T) {
	skipShort(t)
	e := newCSEnv(t)
	api := newMisbehavingAPI(t)
	api.set("good", "v1", map[string]string{"app.conf": "greeting=one\n"})
	e.startApp(t, bins.testapp)
	cs := startOutrider(t, "configsync", "--source", api.srv.URL+"/config", "--dir", e.dir, "--state-dir", e.state,
		"--interval", "100ms", "--debounce", "10ms", "--admin-listen", "127.0.0.1:0",
		"--notify", "http:POST:http://"+e.appAddr+"/-/reload")
	admin := cs.addr("admin_addr")
	waitAppSees(t, e.appAddr, "app.conf", "greeting=one\n")

	intact := func(t *testing.T) {
		t.Helper()
		if b, err := os.ReadFile(filepath.Join(e.dir, "app.conf")); string(b) != "greeting=one\n" {
			t.Errorf("app.conf = %q (%v), want the last good version", b, err)
		}
		if c, _ := fetchAppConfig(e.appAddr); c.Files["app.conf"] != "greeting=one\n" {
			t.Errorf("app sees %q, want the last good version", c.Files["app.conf"])
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(e.dir), "escape.conf")); err == nil {
			t.Error("a file was written outside --dir")
		}
	}
	for _, mode := range []string{"slow-truncated", "truncated", "empty", "html", "wrong-shape", "escape", "binary", "500"} {
		t.Run(mode, func(t *testing.T) {
			before := api.hits.Load()
			api.set(mode, "", nil)
			st := waitStatus(t, admin, func(st csStatus) error {
				if api.hits.Load() < before+2 {
					return fmt.Errorf("waiting for two polls in mode %s", mode)
				}
				if st.LastResult != "invalid" && st.LastResult != "fetch_failed" {
					return fmt.Errorf("last_result %q", st.LastResult)
				}
				return nil
			})
			t.Logf("%s: last_result %s, last_error %q", mode, st.LastResult, st.LastError)
			if st.LastError == "" || st.AppliedVersion != "v1" {
				t.Errorf("status %+v, want an error and v1 still applied", st)
			}
			intact(t)
		})
	}
	t.Run("refused", func(t *testing.T) {
		api.srv.Close() // nothing listens any more
		st := waitStatus(t, admin, func(st csStatus) error {
			if st.LastResult != "fetch_failed" || !strings.Contains(st.LastError, "refused") {
				return fmt.Errorf("status %+v", st)
			}
			return nil
		})
		t.Logf("refused: last_error %q", st.LastError)
		intact(t)
	})

	// A slow but whole answer is fine: it is applied.
	api2 := newMisbehavingAPI(t)
	api2.set("slow-good", "v2", map[string]string{"app.conf": "greeting=two\n"})
	cs.stop()
	startOutrider(t, "configsync", "--source", api2.srv.URL+"/config", "--dir", e.dir, "--state-dir", e.state,
		"--interval", "100ms", "--debounce", "10ms", "--admin-listen", "127.0.0.1:0",
		"--notify", "http:POST:http://"+e.appAddr+"/-/reload")
	waitAppSees(t, e.appAddr, "app.conf", "greeting=two\n")
}

// mountTmpfs mounts a tmpfs of size bytes on a fresh directory and
// unmounts it when the test ends (after the processes using it stop:
// register it before starting them).
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	needRoot(t)
	dir := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		if inCI() {
			t.Fatalf("mounting a tmpfs: %v", err)
		}
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return dir
}

// TestFaultConfigDirFull runs configsync with --dir on a 256 KiB tmpfs. A
// version too big for it fails to apply cleanly: the old version stays live
// and whole, no staging debris eats the space, and a version that fits
// afterwards applies.
func TestFaultConfigDirFull(t *testing.T) {
	skipShort(t)
	dir := mountTmpfs(t, 256<<10)
	e := newCSEnv(t)
	e.dir = dir
	e.api.publish("v1", map[string]string{"app.conf": "greeting=one\n", "big.dat": strings.Repeat("a", 60<<10)})
	e.startApp(t, bins.testapp)
	cs := startOutrider(t, e.args("--notify", "http:POST:http://"+e.appAddr+"/-/reload")...)
	admin := cs.addr("admin_addr")
	waitAppSees(t, e.appAddr, "app.conf", "greeting=one\n")

	e.api.publish("v2", map[string]string{"app.conf": "greeting=two\n", "big.dat": strings.Repeat("b", 400<<10)})
	st := waitStatus(t, admin, func(st csStatus) error {
		if st.LastResult != "apply_failed" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	t.Logf("full disk: last_error %q", st.LastError)
	if !strings.Contains(st.LastError, "no space") || st.AppliedVersion != "v1" {
		t.Errorf("status %+v, want ENOSPC named and v1 still applied", st)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "app.conf")); string(b) != "greeting=one\n" {
		t.Errorf("app.conf = %q after a failed apply, want v1", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "big.dat")); len(b) != 60<<10 || b[0] != 'a' {
		t.Errorf("big.dat is %d bytes after a failed apply, want v1's whole 60 KiB", len(b))
	}
	if c, _ := fetchAppConfig(e.appAddr); c.Files["app.conf"] != "greeting=one\n" {
		t.Errorf("app sees %q, want v1", c.Files["app.conf"])
	}
	// The failed staging directory was removed: a version that fits applies.
	e.api.publish("v3", map[string]string{"app.conf": "greeting=three\n", "big.dat": strings.Repeat("c", 80<<10)})
	waitAppSees(t, e.appAddr, "app.conf", "greeting=three\n")
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, en := range entries {
		names = append(names, en.Name())
	}
	t.Logf("--dir after recovery: %v", names)
}

// caRoot runs `outrider ca root --storage dir` and parses the certificate.
func caRoot(t *testing.T, storage string) *x509.Certificate {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), bins.outrider, "ca", "root", "--storage", storage).Output()
	if err != nil {
		t.Fatalf("outrider ca root: %v", err)
	}
	b, _ := pem.Decode(out)
	if b == nil {
		t.Fatalf("outrider ca root printed no PEM: %q", out)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestFaultOutriderSIGKILLKeepsStorage kills outrider --tls-internal with
// SIGKILL three times while clients handshake and request, restarting it on
// the same --storage each time. Storage must never be corrupted: each new
// process starts, serves the same internal CA, and its leaves verify
// against the root trusted before the first kill.
func TestFaultOutriderSIGKILLKeepsStorage(t *testing.T) {
	skipShort(t)
	app := startApp(t)
	storage := t.TempDir()
	args := []string{"proxy", "--listen", "127.0.0.1:0", "--http-listen", "", "--admin-listen", "",
		"--upstream", "http://" + app.addr("addr"), "--tls-internal", "--storage", storage, "--access-log=false"}
	px := startOutrider(t, args...)
	root := caRoot(t, storage)
	pool := x509.NewCertPool()
	pool.AddCert(root)

	for round := range 3 {
		c := clientFor(px.addr("https_addr"), pool, round%2 == 0)
		waitStatusCode(t, c, "https://app.example/", 200)
		// Many distinct names: each asks the internal CA for a new leaf,
		// so the kill lands while storage is being written.
		var wg sync.WaitGroup
		var ok atomic.Int64
		stopAt := time.Now().Add(700 * time.Millisecond)
		for w := range 8 {
			wg.Go(func() {
				for i := 0; time.Now().Before(stopAt); i++ {
					cc := clientFor(px.addr("https_addr"), pool, false)
					req, _ := http.NewRequest(http.MethodGet, "https://app.example/", nil)
					req.Host = fmt.Sprintf("n%d-%d-%d.app.example", round, w, i)
					cc.Transport.(*http.Transport).TLSClientConfig.ServerName = req.Host
					if resp, err := cc.Do(req); err == nil {
						resp.Body.Close()
						ok.Add(1)
					}
					cc.CloseIdleConnections()
				}
			})
		}
		time.Sleep(350 * time.Millisecond)
		px.kill()
		wg.Wait()
		t.Logf("round %d: %d requests answered before SIGKILL", round, ok.Load())
		px = startOutrider(t, args...)
		if got := caRoot(t, storage); !got.Equal(root) {
			t.Fatalf("round %d: internal CA changed after SIGKILL (serial %v → %v)", round, root.SerialNumber, got.SerialNumber)
		}
	}
	c := clientFor(px.addr("https_addr"), pool, true)
	if code, _, _ := get(t, c, "https://app.example/"); code != 200 {
		t.Errorf("after the last restart: %d", code)
	}
	// A name issued before a kill is still served (from storage or
	// re-issued) under the same root.
	req, _ := http.NewRequest(http.MethodGet, "https://app.example/", nil)
	req.Host = "n0-0-0.app.example"
	c2 := clientFor(px.addr("https_addr"), pool, false)
	c2.Transport.(*http.Transport).TLSClientConfig.ServerName = req.Host
	resp, err := c2.Do(req)
	if err != nil {
		t.Fatalf("name issued before the kills: %v", err)
	}
	resp.Body.Close()
	var tmp []string
	filepath.WalkDir(storage, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(d.Name(), ".tmp") {
			tmp = append(tmp, p)
		}
		return nil
	})
	if len(tmp) > 0 {
		t.Logf("note: temp files left in storage by the kills: %v", tmp)
	}
}
