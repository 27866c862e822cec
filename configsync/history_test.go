package configsync

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// contentHealth is an app whose health depends on the config it reads from
// dir: healthy while app.conf holds one of the allowed contents.
type contentHealth struct {
	mu      sync.Mutex
	allowed map[string]bool
	srv     *httptest.Server
}

func newContentHealth(t *testing.T, dir string) *contentHealth {
	h := &contentHealth{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := os.ReadFile(filepath.Join(dir, "app.conf"))
		h.mu.Lock()
		ok := h.allowed[string(b)]
		h.mu.Unlock()
		if !ok {
			http.Error(w, "config not understood", http.StatusInternalServerError)
		}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *contentHealth) allow(contents ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.allowed = map[string]bool{}
	for _, c := range contents {
		h.allowed[c] = true
	}
}

// TestRollbackGoesFurtherBackThanOneStep: the version before the bad one
// no longer suits the app either (say a dependency moved on), so rollback
// keeps going back through --state-dir's history to one that does (issue
// #16: --keep-versions).
func TestRollbackGoesFurtherBackThanOneStep(t *testing.T) {
	t.Parallel()
	api, app := newConfigAPI(t), newAppStub(t)
	cfg := testConfig(t, api, app)
	health := newContentHealth(t, cfg.Dir)
	cfg.HealthURL = health.srv.URL + "/healthz"
	cfg.HealthTimeout = 400 * time.Millisecond
	cfg.KeepVersions = 3

	health.allow("one")
	api.set("v1", map[string]string{"app.conf": "one"})
	h := startSyncer(t, cfg)
	h.waitApplied("v1")
	health.allow("one", "two")
	api.set("v2", map[string]string{"app.conf": "two"})
	h.waitApplied("v2")

	health.allow("one")
	api.set("v3", map[string]string{"app.conf": "three"})
	waitUntil(t, func() bool {
		st := h.syncer.Status()
		return st.LastResult == ResultRolledBack && st.AppliedVersion == "v1"
	})
	if got := h.file("app.conf"); got != "one" {
		t.Errorf("app.conf = %q after rollback, want one (two steps back)", got)
	}
	if st := h.syncer.Status(); st.Rollbacks != 1 || st.RejectedVersion != "v3" {
		t.Errorf("status = %+v; want one rollback, v3 rejected", st)
	}
	h.stop()

	// The version rolled back to is now the newest kept: a restart, with
	// the API down, restores it.
	api.fail(http.StatusBadGateway)
	hist, err := (stateStore{dir: cfg.StateDir, keep: 3}).history()
	if err != nil || len(hist) != 2 || hist[0].Snap.Version != "v1" || hist[1].Snap.Version != "v2" {
		t.Fatalf("history after rollback = %d versions (%v); want v1, v2", len(hist), err)
	}
	h2 := startSyncer(t, cfg)
	waitUntil(t, func() bool { return h2.syncer.Status().AppliedVersion == "v1" })
	if got := h2.file("app.conf"); got != "one" {
		t.Errorf("app.conf = %q after restart, want one", got)
	}
}
