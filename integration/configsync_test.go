package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outrider-dev/outrider/internal/testcert"
)

// configAPI is the config API a test serves: a JSON bundle with an ETag,
// If-None-Match honoured, and a switch to make it fail.
type configAPI struct {
	mu    sync.Mutex
	body  []byte
	etag  string
	down  bool
	seq   int
	n200  atomic.Int64
	n304  atomic.Int64
	nFail atomic.Int64
	url   string
	// next, when set, makes every 200 answer a fresh version (the kill test).
	next func() []byte
}

func newConfigAPI(t *testing.T) *configAPI {
	t.Helper()
	a := &configAPI{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		if a.next != nil && !a.down {
			a.body = a.next()
			a.seq++
			a.etag = fmt.Sprintf(`"%d"`, a.seq)
		}
		body, etag, down := a.body, a.etag, a.down
		a.mu.Unlock()
		switch {
		case down:
			a.nFail.Add(1)
			http.Error(w, "config API down", http.StatusServiceUnavailable)
		case r.Header.Get("If-None-Match") == etag:
			a.n304.Add(1)
			w.WriteHeader(http.StatusNotModified)
		default:
			a.n200.Add(1)
			w.Header().Set("ETag", etag)
			w.Header().Set("Content-Type", "application/json")
			w.Write(body)
		}
	}))
	t.Cleanup(srv.Close)
	a.url = srv.URL + "/v1/config/app"
	return a
}

func (a *configAPI) publish(version string, files map[string]string) {
	b, _ := json.Marshal(map[string]any{"version": version, "files": files})
	a.mu.Lock()
	defer a.mu.Unlock()
	a.body, a.down = b, false
	a.seq++
	a.etag = fmt.Sprintf(`"%d"`, a.seq)
}

func (a *configAPI) setDown(down bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.down = down
}

// appConfig is GET /config of the test app.
type appConfig struct {
	Files map[string]string `json:"files"`
	Loads int               `json:"loads"`
}

func fetchAppConfig(appAddr string) (appConfig, error) {
	var c appConfig
	resp, err := plainClient.Get("http://" + appAddr + "/config")
	if err != nil {
		return c, err
	}
	defer resp.Body.Close()
	return c, json.NewDecoder(resp.Body).Decode(&c)
}

// waitAppSees waits until the app has loaded file name with content want.
func waitAppSees(t *testing.T, appAddr, name, want string) appConfig {
	t.Helper()
	var c appConfig
	waitFor(t, 15*time.Second, func() error {
		var err error
		if c, err = fetchAppConfig(appAddr); err != nil {
			return err
		}
		if got := c.Files[name]; got != want {
			return fmt.Errorf("app has %s = %q, want %q", name, got, want)
		}
		return nil
	})
	return c
}

// csStatus is the configsync part of /status.
type csStatus struct {
	Source          string `json:"source"`
	DesiredVersion  string `json:"desired_version"`
	AppliedVersion  string `json:"applied_version"`
	LastResult      string `json:"last_result"`
	LastError       string `json:"last_error"`
	RejectedVersion string `json:"rejected_version"`
	Rollbacks       int    `json:"rollbacks"`
	LastSync        string `json:"last_sync"`
}

func fetchStatus(adminAddr string) (csStatus, error) {
	var out struct {
		Configsync csStatus `json:"configsync"`
	}
	resp, err := plainClient.Get("http://" + adminAddr + "/status")
	if err != nil {
		return out.Configsync, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&out)
	return out.Configsync, err
}

func waitStatus(t *testing.T, adminAddr string, f func(csStatus) error) csStatus {
	t.Helper()
	var st csStatus
	waitFor(t, 20*time.Second, func() error {
		var err error
		if st, err = fetchStatus(adminAddr); err != nil {
			return err
		}
		return f(st)
	})
	return st
}

// uniqueApp copies the test app to a unique executable name, so
// signal:…:process=NAME matches exactly one process even when other tests
// run test apps too.
func uniqueApp(t *testing.T) (bin, name string) {
	t.Helper()
	name = fmt.Sprintf("legacy-%d-%d", os.Getpid(), rand.IntN(1e6))
	bin = filepath.Join(t.TempDir(), name)
	data, err := os.ReadFile(bins.testapp)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, name
}

type csEnv struct {
	api     *configAPI
	dir     string
	state   string
	pidfile string
	app     *proc
	appAddr string
}

func newCSEnv(t *testing.T) *csEnv {
	t.Helper()
	base := t.TempDir()
	e := &csEnv{api: newConfigAPI(t), dir: filepath.Join(base, "shared"), state: filepath.Join(base, "state"), pidfile: filepath.Join(base, "app.pid")}
	return e
}

func (e *csEnv) startApp(t *testing.T, bin string) {
	t.Helper()
	e.app = start(t, procSpec{name: "testapp", bin: bin, args: []string{"--listen", "127.0.0.1:0", "--config-dir", e.dir, "--pidfile", e.pidfile}})
	e.appAddr = e.app.addr("addr")
}

func (e *csEnv) args(extra ...string) []string {
	return append([]string{"configsync", "--source", e.api.url, "--dir", e.dir, "--state-dir", e.state,
		"--interval", "50ms", "--debounce", "10ms", "--admin-listen", "127.0.0.1:0"}, extra...)
}

func TestConfigsyncUnchangedPollsGet304AndNoReload(t *testing.T) {
	skipShort(t)
	e := newCSEnv(t)
	e.api.publish("v1", map[string]string{"app.conf": "greeting=hi\n"})
	e.startApp(t, bins.testapp)
	cs := startOutrider(t, e.args("--notify", "signal:HUP:pidfile="+e.pidfile)...)
	admin := cs.addr("admin_addr")
	c := waitAppSees(t, e.appAddr, "app.conf", "greeting=hi\n")
	loads := c.Loads
	n := e.api.n304.Load()
	waitFor(t, 10*time.Second, func() error {
		if got := e.api.n304.Load(); got < n+10 {
			return fmt.Errorf("%d unchanged polls answered 304 so far", got-n)
		}
		return nil
	})
	if c, _ := fetchAppConfig(e.appAddr); c.Loads != loads {
		t.Errorf("app reloaded %d times during unchanged polls, want 0", c.Loads-loads)
	}
	st := waitStatus(t, admin, func(st csStatus) error {
		if st.AppliedVersion != "v1" || st.LastResult != "not_modified" || st.LastSync == "" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	if strings.Contains(st.Source, "?") {
		t.Errorf("status source %q", st.Source)
	}
	_, metrics, _ := get(t, plainClient, "http://"+admin+"/metrics")
	for _, series := range []string{`outrider_configsync_syncs_total{result="applied"}`, `outrider_configsync_syncs_total{result="not_modified"}`,
		`outrider_configsync_applied_version_info{hash=`, "outrider_configsync_last_success_timestamp_seconds"} {
		if !strings.Contains(metrics, series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
	if v := metricValue(metrics, `outrider_configsync_syncs_total{result="applied"}`); v != 1 {
		t.Errorf(`syncs_total{result="applied"} = %v, want 1`, v)
	}
	if code, _, _ := get(t, plainClient, "http://"+admin+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d", code)
	}
	if strings.Contains(cs.output(), "greeting") {
		t.Error("configsync logged file contents")
	}
}

func TestConfigsyncValidateRejectsBadVersion(t *testing.T) {
	skipShort(t)
	e := newCSEnv(t)
	bin, name := uniqueApp(t)
	e.api.publish("v1", map[string]string{"app.conf": "mode=good\n", "db.conf": "db=1\n"})
	e.startApp(t, bin)
	cs := startOutrider(t, e.args("--validate", `sh -c '! grep -q mode=broken {dir}/app.conf'`,
		"--notify", "signal:HUP:process="+name)...)
	c := waitAppSees(t, e.appAddr, "app.conf", "mode=good\n")
	e.api.publish("v2", map[string]string{"app.conf": "mode=broken\n", "db.conf": "db=2\n"})
	st := waitStatus(t, cs.addr("admin_addr"), func(st csStatus) error {
		if st.RejectedVersion != "v2" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	if st.AppliedVersion != "v1" || st.LastResult != "validate_failed" || st.DesiredVersion != "v2" {
		t.Errorf("status after a refused version: %+v", st)
	}
	for f, want := range map[string]string{"app.conf": "mode=good\n", "db.conf": "db=1\n"} {
		if b, _ := os.ReadFile(filepath.Join(e.dir, f)); string(b) != want {
			t.Errorf("%s = %q, want %q (refused versions never touch the files)", f, b, want)
		}
	}
	if c2, _ := fetchAppConfig(e.appAddr); c2.Loads != c.Loads {
		t.Errorf("app was notified of a refused version")
	}
	e.api.publish("v3", map[string]string{"app.conf": "mode=better\n", "db.conf": "db=3\n"})
	waitAppSees(t, e.appAddr, "app.conf", "mode=better\n")
}

func TestConfigsyncRollsBackUnhealthyVersion(t *testing.T) {
	skipShort(t)
	e := newCSEnv(t)
	e.api.publish("v1", map[string]string{"app.conf": "healthy=true\ngreeting=one\n"})
	e.startApp(t, bins.testapp)
	cs := startOutrider(t, e.args("--notify", "http:POST:http://"+e.appAddr+"/-/reload",
		"--health-url", "http://"+e.appAddr+"/healthz", "--health-timeout", "2s")...)
	waitAppSees(t, e.appAddr, "app.conf", "healthy=true\ngreeting=one\n")
	e.api.publish("v2", map[string]string{"app.conf": "healthy=false\ngreeting=two\n", "new.conf": "x=1\n"})
	st := waitStatus(t, cs.addr("admin_addr"), func(st csStatus) error {
		if st.Rollbacks != 1 || st.LastResult != "rolled_back" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	if st.AppliedVersion != "v1" || st.RejectedVersion != "v2" || !strings.Contains(st.LastError, "unhealthy") {
		t.Errorf("status after rollback: %+v", st)
	}
	c := waitAppSees(t, e.appAddr, "app.conf", "healthy=true\ngreeting=one\n")
	if _, ok := c.Files["new.conf"]; ok {
		t.Error("the app still sees new.conf of the rolled-back version")
	}
	if code, _, _ := get(t, plainClient, "http://"+e.appAddr+"/healthz"); code != 200 {
		t.Errorf("app /healthz = %d after rollback", code)
	}
	_, metrics, _ := get(t, plainClient, "http://"+cs.addr("admin_addr")+"/metrics")
	if v := metricValue(metrics, "outrider_configsync_rollbacks_total"); v != 1 {
		t.Errorf("rollbacks_total = %v, want 1", v)
	}
}

func TestConfigsyncAPIDownThenBack(t *testing.T) {
	skipShort(t)
	e := newCSEnv(t)
	e.api.publish("v1", map[string]string{"app.conf": "greeting=one\n"})
	e.startApp(t, bins.testapp)
	cs := startOutrider(t, e.args("--notify", "http:POST:http://"+e.appAddr+"/-/reload")...)
	admin := cs.addr("admin_addr")
	waitAppSees(t, e.appAddr, "app.conf", "greeting=one\n")
	e.api.setDown(true)
	waitStatus(t, admin, func(st csStatus) error {
		if st.LastResult != "fetch_failed" || !strings.Contains(st.LastError, "503") {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	n := e.api.nFail.Load()
	waitFor(t, 10*time.Second, func() error {
		if e.api.nFail.Load() < n+3 {
			return errors.New("waiting for more failed polls")
		}
		return nil
	})
	if b, _ := os.ReadFile(filepath.Join(e.dir, "app.conf")); string(b) != "greeting=one\n" {
		t.Errorf("app.conf = %q while the API was down", b)
	}
	if code, _, _ := get(t, plainClient, "http://"+admin+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d while serving the last good version", code)
	}
	e.api.publish("v2", map[string]string{"app.conf": "greeting=two\n"})
	waitAppSees(t, e.appAddr, "app.conf", "greeting=two\n")
	waitStatus(t, admin, func(st csStatus) error {
		if st.AppliedVersion != "v2" || st.LastError != "" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
}

func TestConfigsyncRestartRestoresLastGood(t *testing.T) {
	skipShort(t)
	e := newCSEnv(t)
	e.api.publish("v1", map[string]string{"app.conf": "greeting=one\n"})
	cs := startOutrider(t, e.args()...)
	waitStatus(t, cs.addr("admin_addr"), func(st csStatus) error {
		if st.AppliedVersion != "v1" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	cs.stop()

	// While configsync is down someone scribbles over the file, and the
	// API goes down too.
	os.Remove(filepath.Join(e.dir, "app.conf"))
	os.WriteFile(filepath.Join(e.dir, "app.conf"), []byte("scribbled"), 0o644)
	e.api.setDown(true)

	// --once (an init container) restores, then fails: the source is down.
	out, err := exec.CommandContext(t.Context(), bins.outrider, append(e.args("--once"), "--log-format=json")...).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("configsync --once with the API down: %v, want exit 1\n%s", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(e.dir, "app.conf")); string(b) != "greeting=one\n" {
		t.Errorf("app.conf = %q after restart, want the last good version", b)
	}

	os.Remove(filepath.Join(e.dir, "app.conf"))
	os.WriteFile(filepath.Join(e.dir, "app.conf"), []byte("scribbled again"), 0o644)
	cs2 := startOutrider(t, e.args()...)
	// Restored before anything else: already true when ready is logged.
	if b, _ := os.ReadFile(filepath.Join(e.dir, "app.conf")); string(b) != "greeting=one\n" {
		waitFor(t, 5*time.Second, func() error {
			if b, _ := os.ReadFile(filepath.Join(e.dir, "app.conf")); string(b) != "greeting=one\n" {
				return fmt.Errorf("app.conf = %q", b)
			}
			return nil
		})
	}
	waitStatus(t, cs2.addr("admin_addr"), func(st csStatus) error {
		if st.AppliedVersion != "v1" || st.LastResult != "fetch_failed" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
}

// TestConfigsyncKillNeverTearsVersions kills configsync at random moments
// while it applies a new three-file version on every poll, and checks from a
// concurrent reader that every read sees one whole version.
func TestConfigsyncKillNeverTearsVersions(t *testing.T) {
	skipShort(t)
	e := newCSEnv(t)
	pad := strings.Repeat("x", 32<<10)
	var gen atomic.Int64
	e.api.next = func() []byte {
		v := gen.Add(1)
		file := func(name string) string { return fmt.Sprintf("begin=%d %s\n%s\nend=%d\n", v, name, pad, v) }
		b, _ := json.Marshal(map[string]any{"version": fmt.Sprint(v), "files": map[string]string{
			"app.conf": file("app"), "db.conf": file("db"), "conf.d/extra.conf": file("extra"),
		}})
		return b
	}
	e.api.publish("0", map[string]string{"app.conf": "placeholder"})

	parse := func(b []byte) (string, error) {
		s := string(b)
		first, _, _ := strings.Cut(s, " ")
		v := strings.TrimPrefix(first, "begin=")
		if !strings.HasPrefix(first, "begin=") || !strings.HasSuffix(s, "\nend="+v+"\n") || len(s) < len(pad) {
			return "", fmt.Errorf("torn file (%d bytes, starts %q)", len(s), s[:min(len(s), 20)])
		}
		return v, nil
	}
	var (
		stopRead = make(chan struct{})
		readErr  = make(chan error, 1)
		seen     sync.Map
		reads    atomic.Int64
	)
	go func() {
		defer close(readErr)
		for {
			select {
			case <-stopRead:
				return
			default:
			}
			target, err := os.Readlink(filepath.Join(e.dir, "..data"))
			if err != nil {
				continue // not there yet
			}
			versions := map[string]bool{}
			ok := true
			for _, f := range []string{"app.conf", "db.conf", "conf.d/extra.conf"} {
				b, err := os.ReadFile(filepath.Join(e.dir, target, f))
				if errors.Is(err, os.ErrNotExist) {
					ok = false // superseded and removed while we read: not a mix
					break
				}
				if err != nil {
					readErr <- err
					return
				}
				v, err := parse(b)
				if err != nil {
					readErr <- fmt.Errorf("%s in %s: %w", f, target, err)
					return
				}
				versions[v] = true
			}
			if ok && len(versions) != 1 {
				readErr <- fmt.Errorf("mixed versions %v in %s", versions, target)
				return
			}
			// What the app opens: the per-file link through ..data.
			if b, err := os.ReadFile(filepath.Join(e.dir, "app.conf")); err == nil {
				v, err := parse(b)
				if err != nil {
					readErr <- fmt.Errorf("app.conf via its link: %w", err)
					return
				}
				seen.Store(v, true)
			} else if !errors.Is(err, os.ErrNotExist) {
				readErr <- err
				return
			}
			reads.Add(1)
		}
	}()

	deadline := time.Now().Add(40 * time.Second)
	kills := 0
	for gen.Load() < 100 && time.Now().Before(deadline) {
		cs := start(t, procSpec{name: "outrider configsync", bin: bins.outrider,
			args: append(e.args("--interval", "10ms", "--debounce", "1ms"), "--log-format=json")})
		// Let it apply a few versions, then kill it at a random moment.
		time.Sleep(time.Duration(50+rand.IntN(400)) * time.Millisecond) // random kill moment, not synchronization
		cs.kill()
		kills++
	}
	close(stopRead)
	if err := <-readErr; err != nil {
		t.Fatalf("reader saw a torn or mixed version: %v", err)
	}
	var distinct int
	seen.Range(func(any, any) bool { distinct++; return true })
	t.Logf("%d kills, %d versions served, %d versions seen by the reader, %d reads", kills, gen.Load(), distinct, reads.Load())
	if gen.Load() < 50 {
		t.Errorf("only %d versions were served in the time; configsync is too slow to restart or apply", gen.Load())
	}

	// After the last kill a clean start restores and carries on.
	cs := startOutrider(t, e.args()...)
	waitStatus(t, cs.addr("admin_addr"), func(st csStatus) error {
		if st.AppliedVersion == "" || st.LastResult != "applied" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	entries, _ := filepath.Glob(filepath.Join(e.dir, "..*"))
	if len(entries) > 3 { // ..data, the live version, maybe one being staged
		t.Errorf("leftovers after restart: %v", entries)
	}
}

func TestConfigsyncInProxy(t *testing.T) {
	skipShort(t)
	e := newCSEnv(t)
	e.api.publish("v1", map[string]string{"app.conf": "greeting=from-proxy\n"})
	e.startApp(t, bins.testapp)
	ca := testcert.NewCA(t)
	cf, kf := ca.LeafFiles(t, t.TempDir(), "app.example")
	px := startOutrider(t, "proxy", "--listen", "127.0.0.1:0", "--http-listen", "", "--admin-listen", "127.0.0.1:0",
		"--upstream", "http://"+e.appAddr, "--cert", cf, "--key", kf,
		"--configsync-source", e.api.url, "--configsync-dir", e.dir, "--configsync-state-dir", e.state,
		"--configsync-interval", "50ms", "--configsync-debounce", "10ms",
		"--configsync-notify", "http:POST:http://"+e.appAddr+"/-/reload")
	waitAppSees(t, e.appAddr, "app.conf", "greeting=from-proxy\n")
	waitStatus(t, px.addr("admin_addr"), func(st csStatus) error {
		if st.AppliedVersion != "v1" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	// Through the proxy, the app answers with the synced setting.
	c := clientFor(px.addr("https_addr"), ca.Pool(), true)
	if code, body, _ := get(t, c, "https://app.example/"); code != 200 || !strings.HasPrefix(body, "from-proxy from the legacy app") {
		t.Errorf("GET / through the proxy = %d %q", code, body)
	}
	e.api.publish("v2", map[string]string{"app.conf": "greeting=changed\n"})
	waitAppSees(t, e.appAddr, "app.conf", "greeting=changed\n")
}

// A mounted ConfigMap: the kubelet swaps a ..data symlink to a new
// versioned directory; configsync follows it and notifies by SIGHUP
// through the app's pidfile.
func TestConfigsyncFromMountedConfigMap(t *testing.T) {
	skipShort(t)
	e := newCSEnv(t)
	src := filepath.Join(t.TempDir(), "configmap")
	os.MkdirAll(src, 0o755)
	version := func(name string, files map[string]string) {
		v := filepath.Join(src, name)
		os.Mkdir(v, 0o755)
		for f, c := range files {
			os.WriteFile(filepath.Join(v, f), []byte(c), 0o644)
			os.Symlink(filepath.Join("..data", f), filepath.Join(src, f)) // exists after the first version
		}
		os.Symlink(name, filepath.Join(src, "..data_tmp"))
		os.Rename(filepath.Join(src, "..data_tmp"), filepath.Join(src, "..data"))
	}
	version("..2026_11_28_v1", map[string]string{"app.conf": "greeting=one\n"})
	e.startApp(t, bins.testapp)
	cs := startOutrider(t, "configsync", "--source", "dir://"+src, "--dir", e.dir, "--state-dir", e.state,
		"--interval", "10m", "--debounce", "10ms", "--admin-listen", "127.0.0.1:0",
		"--notify", "signal:HUP:pidfile="+e.pidfile)
	waitAppSees(t, e.appAddr, "app.conf", "greeting=one\n")
	// The swap must be noticed by its file events: the rescan is 10 min away.
	version("..2026_11_28_v2", map[string]string{"app.conf": "greeting=two\n"})
	waitAppSees(t, e.appAddr, "app.conf", "greeting=two\n")
	st := waitStatus(t, cs.addr("admin_addr"), func(st csStatus) error {
		if st.LastResult != "applied" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	if st.Rollbacks != 0 {
		t.Errorf("status %+v", st)
	}
}
