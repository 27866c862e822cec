package certs

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outrider-dev/outrider/internal/etcdclient"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// startTestEtcd runs a one-member etcd (Debian's etcd-server) on loopback
// with a temporary data dir and returns its client URL host:port. It skips
// under -short or when etcd is missing, except in CI (CI=true), where a
// missing etcd fails the test.
func startTestEtcd(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a real etcd: runs without -short")
	}
	bin, err := exec.LookPath("etcd")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("etcd is required in CI but not installed (scripts/test.sh installs etcd-server)")
		}
		t.Skip("etcd not installed; skipping (CI installs etcd-server)")
	}
	free := func() int {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port
	}
	client := "127.0.0.1:" + strconv.Itoa(free())
	peer := "http://127.0.0.1:" + strconv.Itoa(free())
	cmd := exec.Command(bin,
		"--name", "t", "--data-dir", t.TempDir(),
		"--listen-client-urls", "http://"+client, "--advertise-client-urls", "http://"+client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "t="+peer,
		// Short elections make etcd's minimum lease TTL about one second.
		"--heartbeat-interval", "50", "--election-timeout", "250",
		"--logger", "zap", "--log-level", "error")
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting etcd: %v", err)
	}
	// Stopped in Cleanup, after the storages registered later have
	// released their locks (t.Context is cancelled before cleanups run).
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
	cli := testEtcdClient(t, client)
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		_, err := cli.Get(ctx, "ping")
		cancel()
		if err == nil {
			return client
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd not ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func testEtcdClient(t *testing.T, addr string) *clientv3.Client {
	t.Helper()
	cli, err := etcdclient.New(etcdclient.Target{Endpoints: []string{addr}}, etcdclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func newTestEtcdStorage(t *testing.T, addr, prefix string, ttl time.Duration) *etcdStorage {
	t.Helper()
	s, err := openEtcdStorage("etcd://"+addr+prefix, EtcdConfig{LockTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestEtcdStorageContract(t *testing.T) {
	addr := startTestEtcd(t)
	s := newTestEtcdStorage(t, addr, "/outrider/contract", time.Second)
	other := newTestEtcdStorage(t, addr, "/outrider/contract2", time.Second) // a prefix sharing our prefix's text
	ctx := t.Context()

	if _, err := s.Load(ctx, "certificates/a/a.crt"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load(missing) = %v, want fs.ErrNotExist", err)
	}
	if _, err := s.Stat(ctx, "certificates"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Stat(missing) = %v, want fs.ErrNotExist", err)
	}
	if _, err := s.List(ctx, "certificates", false); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("List(missing) = %v, want fs.ErrNotExist", err)
	}
	before := time.Now().Add(-time.Second)
	for k, v := range map[string]string{
		"certificates/ca/a.test/a.test.crt": "A", "certificates/ca/a.test/a.test.key": "AK",
		"certificates/ca/b.test/b.test.crt": "B", "certificates/cab/x": "not below certificates/ca",
		"acme/ca/users/x@y/x.json": "{}",
	} {
		if err := s.Store(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if err := other.Store(ctx, "certificates/ca/z/z.crt", []byte("Z")); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx, "certificates/ca/a.test/a.test.crt")
	if err != nil || string(got) != "A" {
		t.Errorf("Load = %q, %v; want A", got, err)
	}

	lists := []struct {
		dir       string
		recursive bool
		want      []string
	}{
		{"certificates/ca", false, []string{"certificates/ca/a.test", "certificates/ca/b.test"}},
		{"certificates", false, []string{"certificates/ca", "certificates/cab"}},
		{"certificates/ca", true, []string{"certificates/ca/a.test", "certificates/ca/a.test/a.test.crt",
			"certificates/ca/a.test/a.test.key", "certificates/ca/b.test", "certificates/ca/b.test/b.test.crt"}},
		{"", false, []string{"acme", "certificates"}},
		{"certificates/ca/a.test/a.test.crt", false, nil}, // a file has no children
	}
	for _, l := range lists {
		got, err := s.List(ctx, l.dir, l.recursive)
		if err != nil || !slices.Equal(got, l.want) {
			t.Errorf("List(%q, %v) = %q, %v; want %q", l.dir, l.recursive, got, err, l.want)
		}
	}

	for _, k := range []string{"certificates", "certificates/ca/a.test", "certificates/ca/a.test/a.test.crt"} {
		if !s.Exists(ctx, k) {
			t.Errorf("Exists(%q) = false", k)
		}
	}
	for _, k := range []string{"certificates/c", "certificates/ca/a", "nothing"} {
		if s.Exists(ctx, k) {
			t.Errorf("Exists(%q) = true: only whole path components are prefixes", k)
		}
	}

	fi, err := s.Stat(ctx, "certificates/ca/a.test/a.test.key")
	if err != nil || !fi.IsTerminal || fi.Size != 2 || fi.Modified.Before(before) || fi.Key != "certificates/ca/a.test/a.test.key" {
		t.Errorf("Stat(file) = %+v, %v; want terminal, size 2, modified now", fi, err)
	}
	fi, err = s.Stat(ctx, "certificates/ca")
	if err != nil || fi.IsTerminal || fi.Modified.Before(before) {
		t.Errorf("Stat(dir) = %+v, %v; want a directory modified now", fi, err)
	}

	if err := s.Delete(ctx, "certificates/ca"); err != nil {
		t.Fatal(err)
	}
	if s.Exists(ctx, "certificates/ca/a.test/a.test.crt") || s.Exists(ctx, "certificates/ca") {
		t.Error("Delete(dir) left keys below it")
	}
	if !s.Exists(ctx, "certificates/cab/x") {
		t.Error("Delete(certificates/ca) deleted certificates/cab")
	}
	if err := s.Delete(ctx, "certificates/ca"); err != nil {
		t.Errorf("Delete(missing) = %v, want nil", err)
	}
	if !other.Exists(ctx, "certificates/ca/z/z.crt") {
		t.Error("a storage with another prefix lost its keys")
	}
}

func TestEtcdStorageLockExcludes(t *testing.T) {
	addr := startTestEtcd(t)
	a := newTestEtcdStorage(t, addr, "/outrider/locks", 2*time.Second)
	b := newTestEtcdStorage(t, addr, "/outrider/locks", 2*time.Second)
	ctx := t.Context()
	if err := a.Lock(ctx, "issue_cert_a.test"); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.TryLock(ctx, "issue_cert_a.test"); ok || err != nil {
		t.Fatalf("TryLock on a held lock = %v, %v; want false", ok, err)
	}
	// Held longer than the TTL: the keep-alive must keep it.
	var bHolds atomic.Bool
	got := make(chan error, 1)
	go func() {
		err := b.Lock(ctx, "issue_cert_a.test")
		bHolds.Store(err == nil)
		got <- err
	}()
	time.Sleep(3 * time.Second)
	if bHolds.Load() {
		t.Fatal("b took a lock a still held (keep-alive did not renew the lease)")
	}
	if err := a.Unlock(ctx, "issue_cert_a.test"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("b did not get the lock promptly after a's Unlock")
	}
	if err := b.Unlock(ctx, "issue_cert_a.test"); err != nil {
		t.Fatal(err)
	}
	if err := b.Unlock(ctx, "issue_cert_a.test"); err == nil {
		t.Error("Unlock of a lock not held: no error")
	}
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := a.Lock(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if err := b.Lock(cctx, "x"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Lock with an expiring ctx = %v, want DeadlineExceeded", err)
	}
}

// A holder that dies (its client gone, no Unlock) releases the lock when
// its lease expires, and the lock key names the holder meanwhile.
func TestEtcdStorageDeadHolderReleases(t *testing.T) {
	addr := startTestEtcd(t)
	const ttl = time.Second
	dead, err := openEtcdStorage("etcd://"+addr+"/outrider/dead", EtcdConfig{LockTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	live := newTestEtcdStorage(t, addr, "/outrider/dead", ttl)
	ctx := t.Context()
	if err := dead.Lock(ctx, "issue_cert_d.test"); err != nil {
		t.Fatal(err)
	}
	resp, err := testEtcdClient(t, addr).Get(ctx, "/outrider/dead/locks/issue_cert_d.test")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("lock key: %v, %v", resp, err)
	}
	var owner lockOwner
	if err := json.Unmarshal(resp.Kvs[0].Value, &owner); err != nil || owner.PID != os.Getpid() {
		t.Errorf("lock key value %q: want this process's pid %d", resp.Kvs[0].Value, os.Getpid())
	}
	dead.cli.Close() // keep-alives stop, like a SIGKILL; the lease is not revoked
	start := time.Now()
	if err := live.Lock(ctx, "issue_cert_d.test"); err != nil {
		t.Fatal(err)
	}
	// etcd's lease granularity plus its expiry checks: allow a few TTLs.
	if waited := time.Since(start); waited > 5*ttl {
		t.Errorf("lock taken over after %v, want within a few TTLs of %v", waited, ttl)
	}
	t.Logf("lock of a dead holder taken over after %v (TTL %v)", time.Since(start).Round(time.Millisecond), ttl)
}
