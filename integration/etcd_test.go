package integration

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/outrider-dev/outrider/internal/etcdclient"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcd is a one-member etcd (Debian's etcd-server) on loopback, with its
// data in a t.TempDir so that it can be stopped and started again with its
// keys and revisions intact.
type etcd struct {
	t       *testing.T
	bin     string
	Addr    string // client host:port
	peer    string
	dataDir string
	proc    *proc
	cli     *clientv3.Client
}

// startEtcd starts etcd on free loopback ports and waits until it answers.
// Short elections make its minimum lease TTL about one second, so lock
// leases can be short in tests.
func startEtcd(t *testing.T) *etcd {
	t.Helper()
	skipShort(t)
	e := &etcd{
		t: t, bin: needTool(t, "etcd"), dataDir: t.TempDir(),
		Addr: "127.0.0.1:" + strconv.Itoa(pickPort(t)),
		peer: "http://127.0.0.1:" + strconv.Itoa(pickPort(t)),
	}
	e.Start()
	cli, err := etcdclient.New(etcdclient.Target{Endpoints: []string{e.Addr}}, etcdclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	e.cli = cli
	e.waitReady()
	return e
}

// URL returns the etcd:// location of prefix ("/outrider/certs").
func (e *etcd) URL(prefix string) string { return "etcd://" + e.Addr + prefix }

// Start starts (or restarts) the member on the same ports and data.
func (e *etcd) Start() {
	e.t.Helper()
	e.startAt(e.Addr)
	if e.cli != nil {
		e.waitReady()
	}
}

// Hidden stops the member, runs f against it restarted on another client
// port (so that the clients of the processes under test cannot reach it),
// then restarts it on its own port: what those clients missed meanwhile
// arrives as if they had been cut off.
func (e *etcd) Hidden(f func(cli *clientv3.Client)) {
	e.t.Helper()
	e.Stop()
	other := "127.0.0.1:" + strconv.Itoa(pickPort(e.t))
	e.startAt(other)
	cli, err := etcdclient.New(etcdclient.Target{Endpoints: []string{other}}, etcdclient.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	defer cli.Close()
	waitFor(e.t, 15*time.Second, func() error {
		ctx, cancel := context.WithTimeout(e.t.Context(), time.Second)
		defer cancel()
		_, err := cli.Get(ctx, "ping")
		return err
	})
	f(cli)
	e.Stop()
	e.Start()
}

func (e *etcd) startAt(addr string) {
	e.t.Helper()
	e.proc = start(e.t, procSpec{name: "etcd", bin: e.bin, noReady: true,
		exitCode: -1, // etcd re-raises SIGINT after cleaning up
		args: []string{
			"--name", "it", "--data-dir", e.dataDir,
			"--listen-client-urls", "http://" + addr, "--advertise-client-urls", "http://" + addr,
			"--listen-peer-urls", e.peer, "--initial-advertise-peer-urls", e.peer,
			"--initial-cluster", "it=" + e.peer,
			"--heartbeat-interval", "50", "--election-timeout", "250",
			"--logger", "zap", "--log-level", "warn",
		}})
}

// Stop stops the member (SIGINT); its data stays for Start.
func (e *etcd) Stop() {
	e.t.Helper()
	e.proc.stopExpect(-1)
}

func (e *etcd) waitReady() {
	e.t.Helper()
	waitFor(e.t, 15*time.Second, func() error {
		ctx, cancel := context.WithTimeout(e.t.Context(), time.Second)
		defer cancel()
		_, err := e.cli.Get(ctx, "ping")
		return err
	})
}

// Client returns a client of the test's own.
func (e *etcd) Client() *clientv3.Client { return e.cli }

// Put writes key=value and returns the new revision.
func (e *etcd) Put(key, value string) int64 {
	e.t.Helper()
	resp, err := e.cli.Put(e.t.Context(), key, value)
	if err != nil {
		e.t.Fatalf("etcd put %s: %v", key, err)
	}
	return resp.Header.Revision
}

// Delete deletes key and returns the new revision.
func (e *etcd) Delete(key string) int64 {
	e.t.Helper()
	resp, err := e.cli.Delete(e.t.Context(), key)
	if err != nil {
		e.t.Fatalf("etcd delete %s: %v", key, err)
	}
	return resp.Header.Revision
}

// Compact compacts the history up to rev (physically).
func (e *etcd) Compact(rev int64) {
	e.t.Helper()
	if _, err := e.cli.Compact(e.t.Context(), rev, clientv3.WithCompactPhysical()); err != nil {
		e.t.Fatalf("etcd compact %d: %v", rev, err)
	}
}

// Keys returns the keys under prefix.
func (e *etcd) Keys(prefix string) []string {
	e.t.Helper()
	resp, err := e.cli.Get(e.t.Context(), prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		e.t.Fatalf("etcd get %s: %v", prefix, err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys
}

func TestEtcdHelperRestart(t *testing.T) {
	e := startEtcd(t)
	rev := e.Put("/it/a", "1")
	e.Stop()
	e.Start()
	if got := e.Keys("/it/"); len(got) != 1 {
		t.Fatalf("after restart: keys %q, want /it/a", got)
	}
	if rev2 := e.Put("/it/b", "2"); rev2 <= rev {
		t.Errorf("revision after restart %d, want > %d", rev2, rev)
	}
}
