package configsync

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// configAPI is a config API for tests: it serves a bundle with an ETag and
// honours If-None-Match.
type configAPI struct {
	mu      sync.Mutex
	body    []byte
	etag    string
	status  int // when non-zero, answer this with no body
	n304    atomic.Int64
	n200    atomic.Int64
	lastTok atomic.Value
	srv     *httptest.Server
}

func newConfigAPI(t *testing.T) *configAPI {
	a := &configAPI{}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.lastTok.Store(r.Header.Get("Authorization"))
		a.mu.Lock()
		body, etag, status := a.body, a.etag, a.status
		a.mu.Unlock()
		if status != 0 {
			w.WriteHeader(status)
			return
		}
		if etag != "" && r.Header.Get("If-None-Match") == etag {
			a.n304.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		a.n200.Add(1)
		w.Header().Set("ETag", etag)
		w.Write(body)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

var versionSeq atomic.Int64

// set serves a new bundle.
func (a *configAPI) set(version string, files map[string]string) {
	b, _ := json.Marshal(map[string]any{"version": version, "files": files})
	a.setRaw(b)
}

func (a *configAPI) setRaw(b []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.body, a.status = b, 0
	a.etag = fmt.Sprintf(`"e%d"`, versionSeq.Add(1))
}

func (a *configAPI) fail(status int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.status = status
}

// appStub counts reload notifications and answers health by a flag; while
// down it answers 503 to everything, as an app still starting would.
type appStub struct {
	reloads   atomic.Int64
	healthz   atomic.Int64
	unhealthy atomic.Bool
	down      atomic.Bool
	srv       *httptest.Server
}

func newAppStub(t *testing.T) *appStub {
	a := &appStub{}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.down.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		switch r.URL.Path {
		case "/-/reload":
			a.reloads.Add(1)
		case "/healthz":
			a.healthz.Add(1)
			if a.unhealthy.Load() {
				http.Error(w, "bad", http.StatusInternalServerError)
			}
		}
	}))
	t.Cleanup(a.srv.Close)
	return a
}

type harness struct {
	t      *testing.T
	dir    string
	state  string
	reg    *prometheus.Registry
	syncer *Syncer
	cancel context.CancelFunc
	done   chan error
}

func testConfig(t *testing.T, api *configAPI, app *appStub) Config {
	base := t.TempDir()
	return Config{
		Source:        api.srv.URL + "/config",
		Dir:           filepath.Join(base, "shared"),
		StateDir:      filepath.Join(base, "state"),
		Interval:      20 * time.Millisecond,
		Debounce:      5 * time.Millisecond,
		Notify:        []string{"http:POST:" + app.srv.URL + "/-/reload"},
		HealthTimeout: 2 * time.Second,
		DriftInterval: 20 * time.Millisecond,
	}
}

func startSyncer(t *testing.T, cfg Config) *harness {
	t.Helper()
	h := &harness{t: t, dir: cfg.Dir, state: cfg.StateDir, reg: prometheus.NewRegistry(), done: make(chan error, 1)}
	cfg.Registerer = h.reg
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.syncer = s
	ctx, cancel := context.WithCancel(t.Context())
	h.cancel = cancel
	go func() { h.done <- s.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	if err := <-h.done; err != nil {
		h.t.Errorf("Run() = %v, want nil after cancel", err)
	}
}

func (h *harness) waitApplied(version string) {
	h.t.Helper()
	// Done, not just live: the success is recorded after notify and health.
	waitUntil(h.t, func() bool {
		st := h.syncer.Status()
		return st.AppliedVersion == version && st.LastSuccess != nil && st.AppliedAt != nil && !st.LastSuccess.Before(*st.AppliedAt)
	})
}

func (h *harness) file(name string) string {
	h.t.Helper()
	b, err := os.ReadFile(filepath.Join(h.dir, name))
	if err != nil {
		h.t.Fatal(err)
	}
	return string(b)
}

func TestSyncerAppliesOnceAndSkipsUnchanged(t *testing.T) {
	api, app := newConfigAPI(t), newAppStub(t)
	api.set("v1", map[string]string{"app.conf": "greeting=hi\n"})
	h := startSyncer(t, testConfig(t, api, app))
	h.waitApplied("v1")
	if got := h.file("app.conf"); got != "greeting=hi\n" {
		t.Errorf("app.conf = %q", got)
	}
	waitUntil(t, func() bool { return api.n304.Load() >= 5 })
	if got := app.reloads.Load(); got != 1 {
		t.Errorf("app reloaded %d times, want 1 (unchanged polls must not notify)", got)
	}
	if err := h.syncer.Ready(t.Context()); err != nil {
		t.Errorf("Ready() = %v", err)
	}
	// A new ETag with the same content is not a change either.
	api.set("v1", map[string]string{"app.conf": "greeting=hi\n"})
	n := api.n200.Load()
	waitUntil(t, func() bool { return api.n200.Load() > n && api.n304.Load() > 10 })
	if got := app.reloads.Load(); got != 1 {
		t.Errorf("app reloaded %d times after a same-content ETag change, want 1", got)
	}
	api.set("v2", map[string]string{"app.conf": "greeting=hello\n"})
	h.waitApplied("v2")
	if got := app.reloads.Load(); got != 2 {
		t.Errorf("app reloaded %d times, want 2", got)
	}
}

func TestSyncerKeepsFilesOnBadAnswers(t *testing.T) {
	api, app := newConfigAPI(t), newAppStub(t)
	api.set("v1", map[string]string{"app.conf": "good\n"})
	h := startSyncer(t, testConfig(t, api, app))
	h.waitApplied("v1")
	bad := []struct {
		name    string
		set     func()
		results string
	}{
		{"empty", func() { api.setRaw(nil) }, ResultInvalid},
		{"truncated", func() { api.setRaw([]byte(`{"version":"v2","files":{"app.conf":"ba`)) }, ResultInvalid},
		{"escape", func() { api.set("v3", map[string]string{"app.conf": "x", "../evil": "x"}) }, ResultInvalid},
		{"down", func() { api.fail(http.StatusServiceUnavailable) }, ResultFetchFailed},
	}
	for _, b := range bad {
		b.set()
		before := testutil.ToFloat64(h.syncer.m.syncs.WithLabelValues(b.results))
		waitUntil(t, func() bool { return testutil.ToFloat64(h.syncer.m.syncs.WithLabelValues(b.results)) > before })
		if got := h.file("app.conf"); got != "good\n" {
			t.Errorf("%s: app.conf = %q, want the good version", b.name, got)
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(h.dir), "evil")); err == nil {
			t.Errorf("%s: a file escaped the dir", b.name)
		}
	}
	if got := app.reloads.Load(); got != 1 {
		t.Errorf("app reloaded %d times, want 1", got)
	}
	api.set("v4", map[string]string{"app.conf": "better\n"})
	h.waitApplied("v4")
}

func TestSyncerValidateRefusesVersion(t *testing.T) {
	api, app := newConfigAPI(t), newAppStub(t)
	api.set("v1", map[string]string{"app.conf": "ok\n"})
	cfg := testConfig(t, api, app)
	cfg.ValidateCommand = `sh -c '! grep -q broken {dir}/app.conf'`
	h := startSyncer(t, cfg)
	h.waitApplied("v1")
	api.set("v2", map[string]string{"app.conf": "broken\n"})
	waitUntil(t, func() bool { return h.syncer.Status().RejectedVersion == "v2" })
	if got := h.file("app.conf"); got != "ok\n" {
		t.Errorf("app.conf = %q after a refused version", got)
	}
	st := h.syncer.Status()
	if st.RejectedVersion != "v2" || st.AppliedVersion != "v1" || !strings.Contains(st.LastError, "validate") {
		t.Errorf("status = %+v", st)
	}
	if entries, _ := filepath.Glob(filepath.Join(h.dir, "..2*")); len(entries) != 1 {
		t.Errorf("version dirs after a refused version: %v, want only the live one", entries)
	}
}

func TestSyncerRollsBackUnhealthyVersion(t *testing.T) {
	api, app := newConfigAPI(t), newAppStub(t)
	api.set("v1", map[string]string{"app.conf": "ok\n"})
	cfg := testConfig(t, api, app)
	cfg.HealthURL = app.srv.URL + "/healthz"
	cfg.HealthTimeout = 300 * time.Millisecond
	h := startSyncer(t, cfg)
	h.waitApplied("v1")
	app.unhealthy.Store(true)
	api.set("v2", map[string]string{"app.conf": "bad\n", "extra.conf": "x"})
	waitUntil(t, func() bool { st := h.syncer.Status(); return st.Rollbacks == 1 && st.LastResult == ResultRolledBack })
	app.unhealthy.Store(false)
	if got := h.file("app.conf"); got != "ok\n" {
		t.Errorf("app.conf = %q after rollback", got)
	}
	if _, err := os.Lstat(filepath.Join(h.dir, "extra.conf")); err == nil {
		t.Error("extra.conf of the bad version survived the rollback")
	}
	// Notified for v2 and again for the rollback.
	if got := app.reloads.Load(); got != 3 {
		t.Errorf("reloads = %d, want 3 (v1, v2, rollback)", got)
	}
	if got := testutil.ToFloat64(h.syncer.m.rollbacks); got != 1 {
		t.Errorf("rollbacks_total = %v", got)
	}
	// SIGHUP gives the refused version another chance.
	if err := h.syncer.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	h.waitApplied("v2")
}

func TestSyncerRestoresLastGoodAtStart(t *testing.T) {
	api, app := newConfigAPI(t), newAppStub(t)
	api.set("v1", map[string]string{"app.conf": "good\n"})
	cfg := testConfig(t, api, app)
	h := startSyncer(t, cfg)
	h.waitApplied("v1")
	h.stop()

	// Someone breaks the dir while we are down, and the API is down.
	os.Remove(filepath.Join(cfg.Dir, "app.conf"))
	os.WriteFile(filepath.Join(cfg.Dir, "app.conf"), []byte("scribble"), 0o644)
	api.fail(http.StatusBadGateway)
	h2 := startSyncer(t, cfg)
	waitUntil(t, func() bool { return h2.syncer.Status().AppliedVersion == "v1" })
	if got := h2.file("app.conf"); got != "good\n" {
		t.Errorf("app.conf = %q, want the last good version", got)
	}
}

// Issue #12: at pod start the app is not up when the first version lands.
// The version goes live (so the app finds its files when it starts), the
// notify is retried with back-off until the app answers, then health is
// checked and the version recorded as last good.
func TestSyncerRetriesFirstNotifyUntilAppAnswers(t *testing.T) {
	api, app := newConfigAPI(t), newAppStub(t)
	api.set("v1", map[string]string{"app.conf": "greeting=hi\n"})
	app.down.Store(true)
	cfg := testConfig(t, api, app)
	cfg.HealthURL = app.srv.URL + "/healthz"
	h := startSyncer(t, cfg)
	waitUntil(t, func() bool {
		st := h.syncer.Status()
		return st.State == StateNotifyPending && st.LastResult == ResultNotifyFailed
	})
	if got := h.file("app.conf"); got != "greeting=hi\n" {
		t.Errorf("app.conf = %q while the app is down, want v1 live", got)
	}
	if err := h.syncer.Ready(t.Context()); err != nil {
		t.Errorf("Ready() = %v while the notify is pending, want nil (the app must be able to start)", err)
	}
	if _, err := os.Stat(filepath.Join(h.state, lastGoodName)); err == nil {
		t.Error("v1 saved as last good before the app confirmed it")
	}
	app.down.Store(false)
	h.waitApplied("v1")
	if st := h.syncer.Status(); st.State != StateInSync || st.LastError != "" {
		t.Errorf("status after the app came up = %+v, want in_sync without an error", st)
	}
	if app.reloads.Load() != 1 || app.healthz.Load() < 2 {
		t.Errorf("reloads = %d, health checks = %d; want 1 and at least 2", app.reloads.Load(), app.healthz.Load())
	}
	if good, _, err := h.syncer.state.load(); err != nil || good == nil || good.Version != "v1" {
		t.Errorf("last good = %v, %v; want v1", good, err)
	}
}

// Issue #12: a last good version restored at start is announced to an app
// that is not up yet by the same retry.
func TestSyncerRetriesNotifyAfterRestore(t *testing.T) {
	api, app := newConfigAPI(t), newAppStub(t)
	api.set("v1", map[string]string{"app.conf": "good\n"})
	cfg := testConfig(t, api, app)
	h := startSyncer(t, cfg)
	h.waitApplied("v1")
	h.stop()

	os.Remove(filepath.Join(cfg.Dir, "app.conf"))
	api.fail(http.StatusBadGateway)
	app.down.Store(true)
	h2 := startSyncer(t, cfg)
	waitUntil(t, func() bool { return h2.syncer.Status().State == StateNotifyPending })
	n := app.reloads.Load()
	app.down.Store(false)
	waitUntil(t, func() bool { return h2.syncer.Status().State == StateInSync && app.reloads.Load() > n })
}

// Issue #12: while the app's health is being checked, /status says so.
func TestSyncerStatusVerifyingDuringHealthWindow(t *testing.T) {
	api, app := newConfigAPI(t), newAppStub(t)
	api.set("v1", map[string]string{"app.conf": "one\n"})
	cfg := testConfig(t, api, app)
	cfg.HealthURL = app.srv.URL + "/healthz"
	cfg.HealthTimeout = 5 * time.Second
	h := startSyncer(t, cfg)
	h.waitApplied("v1")
	app.unhealthy.Store(true)
	api.set("v2", map[string]string{"app.conf": "two\n"})
	waitUntil(t, func() bool {
		st := h.syncer.Status()
		return st.State == StateVerifying && st.AppliedVersion == "v2"
	})
	app.unhealthy.Store(false)
	h.waitApplied("v2")
	if st := h.syncer.Status(); st.State != StateInSync {
		t.Errorf("state after a healthy v2 = %q, want %q", st.State, StateInSync)
	}
}

func TestSyncerDrift(t *testing.T) {
	for _, action := range []string{DriftRestore, DriftReport} {
		t.Run(action, func(t *testing.T) {
			api, app := newConfigAPI(t), newAppStub(t)
			api.set("v1", map[string]string{"app.conf": "managed\n"})
			cfg := testConfig(t, api, app)
			cfg.OnDrift = action
			h := startSyncer(t, cfg)
			h.waitApplied("v1")
			if err := os.WriteFile(filepath.Join(cfg.Dir, "app.conf"), []byte("hand edit\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, func() bool { return h.syncer.Status().DriftDetected >= 1 })
			if action == DriftRestore {
				waitUntil(t, func() bool { b, _ := os.ReadFile(filepath.Join(cfg.Dir, "app.conf")); return string(b) == "managed\n" })
			} else if got := h.file("app.conf"); got != "hand edit\n" {
				t.Errorf("report mode changed the file: %q", got)
			}
			if got := testutil.ToFloat64(h.syncer.m.drift.WithLabelValues(map[string]string{DriftRestore: "restored", DriftReport: "reported"}[action])); got < 1 {
				t.Errorf("drift metric = %v", got)
			}
		})
	}
}

func TestSyncerDebouncesBursts(t *testing.T) {
	src := &chanSource{ch: make(chan Update)}
	app := newAppStub(t)
	base := t.TempDir()
	cfg := Config{Dir: filepath.Join(base, "d"), Source: "dir:///unused", Debounce: 100 * time.Millisecond,
		Notify: []string{"http:POST:" + app.srv.URL + "/-/reload"}, Registerer: prometheus.NewRegistry()}
	s, err := NewWithSource(cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	for i := range 10 {
		src.ch <- Update{Snapshot: snap("app.conf", fmt.Sprint(i))}
	}
	waitUntil(t, func() bool {
		st := s.Status()
		return st.AppliedHash == snap("app.conf", "9").Hash() && st.LastResult == ResultApplied
	})
	cancel()
	<-done
	if got := app.reloads.Load(); got != 1 {
		t.Errorf("a burst of 10 versions caused %d reloads, want 1", got)
	}
}

type chanSource struct{ ch chan Update }

func (c *chanSource) Fetch(context.Context) (*Snapshot, error) { return nil, ErrNotModified }
func (c *chanSource) String() string                           { return "test://" }
func (c *chanSource) Watch(ctx context.Context, out chan<- Update) error {
	for {
		select {
		case u := <-c.ch:
			send(ctx, out, u)
		case <-ctx.Done():
			return nil
		}
	}
}

func TestSyncerSingleFileModeAndToken(t *testing.T) {
	api, app := newConfigAPI(t), newAppStub(t)
	api.setRaw([]byte("port=8080\n"))
	cfg := testConfig(t, api, app)
	cfg.File = "app.conf"
	cfg.TokenFile = filepath.Join(t.TempDir(), "token")
	os.WriteFile(cfg.TokenFile, []byte("s3cret\n"), 0o600)
	h := startSyncer(t, cfg)
	waitUntil(t, func() bool { return h.syncer.Status().AppliedHash != "" })
	if got := h.file("app.conf"); got != "port=8080\n" {
		t.Errorf("app.conf = %q", got)
	}
	if got, _ := api.lastTok.Load().(string); got != "Bearer s3cret" {
		t.Errorf("Authorization = %q", got)
	}
}

func TestDirSourceFollowsDataSwaps(t *testing.T) {
	srcDir := t.TempDir()
	// A ConfigMap volume as the kubelet writes it.
	cm := &layout{dir: srcDir, now: time.Now}
	apply(t, cm, snap("a.conf", "1", "b.conf", "1"))
	app := newAppStub(t)
	base := t.TempDir()
	cfg := Config{Source: "dir://" + srcDir, Dir: filepath.Join(base, "shared"), Interval: time.Second, Debounce: 10 * time.Millisecond,
		Notify: []string{"http:POST:" + app.srv.URL + "/-/reload"}}
	h := startSyncer(t, cfg)
	want1 := snap("a.conf", "1", "b.conf", "1").Hash()
	waitUntil(t, func() bool { return h.syncer.Status().AppliedHash == want1 })
	apply(t, cm, snap("a.conf", "2", "b.conf", "2", "c.conf", "2"))
	want2 := snap("a.conf", "2", "b.conf", "2", "c.conf", "2").Hash()
	waitUntil(t, func() bool { return h.syncer.Status().AppliedHash == want2 })
	if got := h.file("c.conf"); got != "2" {
		t.Errorf("c.conf = %q", got)
	}
}

func TestDirSourceRejectsEscapingSymlink(t *testing.T) {
	srcDir := t.TempDir()
	os.WriteFile(filepath.Join(srcDir, "ok.conf"), []byte("x"), 0o644)
	os.Symlink("/etc/hostname", filepath.Join(srcDir, "leak"))
	src := newDirSource(srcDir, SourceOptions{})
	if _, err := src.Fetch(t.Context()); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("Fetch() = %v, want ErrUnsafePath", err)
	}
}

func TestRunOnceFailsWhenSourceUnreachable(t *testing.T) {
	api, app := newConfigAPI(t), newAppStub(t)
	cfg := testConfig(t, api, app)
	api.srv.Close()
	cfg.Registerer = prometheus.NewRegistry()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RunOnce(t.Context()); err == nil {
		t.Error("RunOnce() = nil with the source down, want an error")
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	api, app := newConfigAPI(t), newAppStub(t)
	api.set("v1", map[string]string{"app.conf": "a=1\npassword=old\n"})
	cfg := testConfig(t, api, app)
	cfg.Registerer = prometheus.NewRegistry()
	s, _ := New(cfg)
	if err := s.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	api.set("v2", map[string]string{"app.conf": "a=2\npassword=new\n"})
	cfg.Registerer = prometheus.NewRegistry()
	s2, _ := New(cfg)
	var out bytes.Buffer
	if err := s2.DryRun(t.Context(), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "+a=2") || strings.Contains(out.String(), "new") || strings.Contains(out.String(), "old") {
		t.Errorf("dry-run diff:\n%s", out.String())
	}
	if b, _ := os.ReadFile(filepath.Join(cfg.Dir, "app.conf")); string(b) != "a=1\npassword=old\n" {
		t.Errorf("dry run changed app.conf to %q", b)
	}
	if got := app.reloads.Load(); got != 1 {
		t.Errorf("reloads = %d, want 1", got)
	}
}

func TestConfigValidateReportsEverything(t *testing.T) {
	err := Config{Source: "ftp//x", Dir: "rel", StateDir: "/x", Notify: []string{"bogus"}, OnDrift: "ignore", Interval: -1}.Validate()
	if err == nil {
		t.Fatal("Validate() = nil")
	}
	for _, want := range []string{"source", "dir \"rel\"", "notify", "on-drift", "interval"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %q, missing %q", err, want)
		}
	}
	if err := (Config{Source: "http://x/", Dir: "/a", StateDir: "/a/state"}).Validate(); err == nil {
		t.Error("state dir inside dir accepted")
	}
}

func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	api, app := newConfigAPI(t), newAppStub(t)
	api.set("v1", map[string]string{"app.conf": "x"})
	cfg := testConfig(t, api, app)
	cfg.Registerer = reg
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RunOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
}
