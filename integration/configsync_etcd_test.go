package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// configsyncStatus is the part of configsync's /status these tests read.
type configsyncStatus struct {
	Configsync struct {
		AppliedVersion string `json:"applied_version"`
		LastError      string `json:"last_error"`
	} `json:"configsync"`
}

// startEtcdConfigsync runs `outrider configsync` against an etcd prefix.
// The poll/re-list interval is long, so that every change seen in the test
// arrived by watch.
func startEtcdConfigsync(t *testing.T, e *etcd, prefix, dir string) *proc {
	t.Helper()
	return startOutrider(t, "configsync", "--source", e.URL(prefix), "--dir", dir,
		"--admin-listen", "127.0.0.1:0", "--interval", "10m", "--debounce", "50ms", "--drift-interval", "10m")
}

// waitFiles waits until dir holds exactly want (name → content) and
// /status shows version (when not empty).
func waitFiles(t *testing.T, cs *proc, dir string, want map[string]string, version int64) {
	t.Helper()
	waitFor(t, 15*time.Second, func() error {
		for name, content := range want {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				return err
			}
			if string(b) != content {
				return fmt.Errorf("%s = %q, want %q", name, b, content)
			}
		}
		if version == 0 {
			return nil
		}
		var st configsyncStatus
		getJSON(t, plainClient, "http://"+cs.addr("admin_addr")+"/status", &st)
		if st.Configsync.AppliedVersion != strconv.FormatInt(version, 10) {
			return fmt.Errorf("/status applied_version %q, want %d (last error %q)", st.Configsync.AppliedVersion, version, st.Configsync.LastError)
		}
		return nil
	})
}

func absent(t *testing.T, dir string, names ...string) {
	t.Helper()
	waitFor(t, 10*time.Second, func() error {
		for _, n := range names {
			if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
				return fmt.Errorf("%s still present", n)
			}
		}
		return nil
	})
}

// The keys under /apps/demo/ become the files; changes arrive by watch;
// the watch survives an etcd restart and a compaction of the revisions it
// had not seen; /status shows the etcd revision.
func TestConfigsyncEtcdWatchCompactionRestart(t *testing.T) {
	e := startEtcd(t)
	e.Put("/apps/demo/app.conf", "v1")
	e.Put("/apps/demo2/other.conf", "not ours") // shares the prefix's text, not the prefix
	rev := e.Put("/apps/demo/conf.d/a.conf", "a1")
	dir := filepath.Join(t.TempDir(), "live")
	cs := startEtcdConfigsync(t, e, "/apps/demo", dir)
	waitFiles(t, cs, dir, map[string]string{"app.conf": "v1", "conf.d/a.conf": "a1"}, rev)
	absent(t, dir, "other.conf", "../other.conf")

	rev = e.Put("/apps/demo/app.conf", "v2")
	waitFiles(t, cs, dir, map[string]string{"app.conf": "v2", "conf.d/a.conf": "a1"}, rev)
	rev = e.Delete("/apps/demo/conf.d/a.conf")
	waitFiles(t, cs, dir, map[string]string{"app.conf": "v2"}, rev)
	absent(t, dir, "conf.d/a.conf")
	// A write elsewhere in etcd is no new version.
	e.Put("/apps/demo2/other.conf", "still not ours")

	// etcd goes away and comes back with its data: the watch resumes.
	e.Stop()
	e.Start()
	rev = e.Put("/apps/demo/app.conf", "v3")
	waitFiles(t, cs, dir, map[string]string{"app.conf": "v3"}, rev)

	// While configsync cannot reach etcd, change and compact past what its
	// watch has seen: when it reconnects, the watch ends with "compacted"
	// and configsync re-lists.
	e.Hidden(func(cli *clientv3.Client) {
		ctx := t.Context()
		if _, err := cli.Put(ctx, "/apps/demo/app.conf", "v4"); err != nil {
			t.Fatal(err)
		}
		resp, err := cli.Put(ctx, "/apps/demo/b.conf", "b4")
		if err != nil {
			t.Fatal(err)
		}
		rev = resp.Header.Revision
		if _, err := cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
			t.Fatal(err)
		}
	})
	waitFiles(t, cs, dir, map[string]string{"app.conf": "v4", "b.conf": "b4"}, rev)
	if n := countLines(cs, "compacted while watching"); n == 0 {
		t.Error(`no "compacted while watching" log: the watch did not see the compaction`)
	}
	rev = e.Put("/apps/demo/app.conf", "v5")
	waitFiles(t, cs, dir, map[string]string{"app.conf": "v5", "b.conf": "b4"}, rev)
	t.Logf("re-lists after compaction: %d, after a failed watch: %d",
		countLines(cs, "compacted while watching"), countLines(cs, "etcd watch failed"))
}

// publishCmd runs an operator helper and decodes its JSON answer.
func publishCmd(t *testing.T, args ...string) (res struct {
	Revision                int64
	Put, Deleted, Unchanged int
}) {
	t.Helper()
	out, err := exec.Command(bins.outrider, append([]string{"configsync"}, args...)...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("outrider configsync %v: %v\n%s", args, err, stderr)
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("outrider configsync %v: output %q: %v", args, out, err)
	}
	return res
}

func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	os.RemoveAll(dir)
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// publish writes a directory as one revision (deleting keys with no file);
// rollback publishes an earlier revision's values as a new revision.
func TestConfigsyncEtcdPublishRollback(t *testing.T) {
	e := startEtcd(t)
	src := e.URL("/apps/pub")
	local := filepath.Join(t.TempDir(), "release")
	writeTree(t, local, map[string]string{"app.conf": "p1", "sub/x.conf": "x1"})
	r1 := publishCmd(t, "publish", "--source", src, "--dir", local)
	if r1.Put != 2 || r1.Deleted != 0 {
		t.Errorf("first publish = %+v, want 2 put", r1)
	}
	dir := filepath.Join(t.TempDir(), "live")
	cs := startEtcdConfigsync(t, e, "/apps/pub", dir)
	waitFiles(t, cs, dir, map[string]string{"app.conf": "p1", "sub/x.conf": "x1"}, r1.Revision)

	writeTree(t, local, map[string]string{"app.conf": "p2", "b.conf": "b2"})
	r2 := publishCmd(t, "publish", "--source", src, "--dir", local)
	if r2.Put != 2 || r2.Deleted != 1 || r2.Revision != r1.Revision+1 {
		t.Errorf("second publish = %+v, want 2 put, 1 deleted, one revision after %d", r2, r1.Revision)
	}
	waitFiles(t, cs, dir, map[string]string{"app.conf": "p2", "b.conf": "b2"}, r2.Revision)
	absent(t, dir, "sub/x.conf")
	if again := publishCmd(t, "publish", "--source", src, "--dir", local); again.Put != 0 || again.Unchanged != 2 {
		t.Errorf("publishing the same dir again = %+v, want no change", again)
	}

	r3 := publishCmd(t, "rollback", "--source", src, "--to-revision", strconv.FormatInt(r1.Revision, 10))
	if r3.Revision <= r2.Revision {
		t.Errorf("rollback revision %d, want a new revision after %d", r3.Revision, r2.Revision)
	}
	waitFiles(t, cs, dir, map[string]string{"app.conf": "p1", "sub/x.conf": "x1"}, r3.Revision)
	absent(t, dir, "b.conf")

	out, err := exec.Command(bins.outrider, "configsync", "rollback", "--source", src, "--to-revision", "999999").CombinedOutput()
	if err == nil {
		t.Errorf("rollback to a future revision succeeded: %s", out)
	}
}
