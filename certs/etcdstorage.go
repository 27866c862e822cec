package certs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/outrider-dev/outrider/internal/etcdclient"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// EtcdConfig configures the etcd storage used when Config.Storage is an
// etcd://host:2379[,host2:2379]/prefix location: replicas that share it
// share one ACME account, one certificate per name set, the challenge
// tokens (any replica answers a challenge another one started), the internal
// CA and the order ledger.
type EtcdConfig struct {
	// Client holds the TLS and authentication settings (--etcd-* flags).
	Client etcdclient.Options
	// LockTTL is the lease of a held lock: a replica that dies while
	// holding one (in the middle of an order) releases it this long after
	// its last keep-alive. Live holders renew it every third of it. If zero,
	// 15s; etcd rounds it up to whole seconds and to its own minimum (about
	// 2s with default election settings).
	LockTTL time.Duration
	// Logger receives warnings about lost locks. If nil, they are discarded.
	Logger *slog.Logger
}

// DefaultEtcdLockTTL is the lock lease when EtcdConfig.LockTTL is zero.
const DefaultEtcdLockTTL = 15 * time.Second

// etcdStorage is a certmagic.Storage (with Locker and TryLocker) on etcd v3.
// Under its prefix P it keeps:
//
//	P/data/<key>   the value, as it is (etcdctl get shows the PEM)
//	P/meta/<key>   the time of the last Store (RFC 3339), for Stat
//	P/locks/<name> the owner of a held lock, attached to a lease
//
// Store writes data and meta in one transaction. "Directories" are implicit:
// a key is a directory when other keys lie below it ("a" for "a/b", not for
// "ab/c"), as certmagic's Storage contract defines.
//
// A lock is a key created only if absent (CreateRevision == 0) under a
// lease of LockTTL, kept alive while held. Waiters watch the key for its
// deletion (Unlock revokes the lease; a dead holder's lease expires).
type etcdStorage struct {
	cli    *clientv3.Client
	target etcdclient.Target
	ttl    time.Duration
	log    *slog.Logger
	owner  string // JSON written into lock keys: who holds it

	mu   sync.Mutex
	held map[string]*heldLock
}

type heldLock struct {
	lease clientv3.LeaseID
	stop  context.CancelFunc // ends the keep-alive
	done  chan struct{}      // closed when the keep-alive has ended
}

// Interface guards.
var (
	_ certmagic.Storage   = (*etcdStorage)(nil)
	_ certmagic.TryLocker = (*etcdStorage)(nil)
)

// openEtcdStorage connects to the etcd location (without waiting: the first
// call does).
func openEtcdStorage(location string, cfg EtcdConfig) (*etcdStorage, error) {
	t, err := etcdclient.ParseURL(location)
	if err != nil {
		return nil, fmt.Errorf("--storage: %w", err)
	}
	cli, err := etcdclient.New(t, cfg.Client)
	if err != nil {
		return nil, err
	}
	return newEtcdStorage(cli, t, cfg), nil
}

func newEtcdStorage(cli *clientv3.Client, t etcdclient.Target, cfg EtcdConfig) *etcdStorage {
	if cfg.LockTTL <= 0 {
		cfg.LockTTL = DefaultEtcdLockTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	host, _ := os.Hostname()
	owner, _ := json.Marshal(lockOwner{Host: host, PID: os.Getpid()})
	return &etcdStorage{
		cli: cli, target: t, ttl: cfg.LockTTL, log: cfg.Logger,
		owner: string(owner), held: map[string]*heldLock{},
	}
}

// lockOwner is the value of a lock key, for operators (etcdctl get) and
// tests: which process holds the lock.
type lockOwner struct {
	Host string `json:"host"`
	PID  int    `json:"pid"`
}

// String identifies the storage; certmagic treats equal strings as one
// cluster.
func (s *etcdStorage) String() string { return "EtcdStorage:" + s.target.String() }

// Close releases every lock still held and closes the client.
func (s *etcdStorage) Close() error {
	s.mu.Lock()
	names := make([]string, 0, len(s.held))
	for n := range s.held {
		names = append(names, n)
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, n := range names {
		s.Unlock(ctx, n) // a failed revoke expires with the lease
	}
	return s.cli.Close()
}

func (s *etcdStorage) dataKey(key string) string { return s.target.Prefix + "/data/" + cleanKey(key) }
func (s *etcdStorage) metaKey(key string) string { return s.target.Prefix + "/meta/" + cleanKey(key) }
func (s *etcdStorage) lockKey(name string) string {
	return s.target.Prefix + "/locks/" + cleanKey(name)
}

// cleanKey drops leading and trailing slashes, which certmagic's keys never
// have but which would otherwise make "a" and "/a" two keys.
func cleanKey(key string) string { return strings.Trim(key, "/") }

// dirPrefix is the range of keys below key ("a/"), or the whole namespace
// for the root key "".
func dirPrefix(base string) string {
	if strings.HasSuffix(base, "/") {
		return base
	}
	return base + "/"
}

// Store puts value at key, recording the time for Stat.
func (s *etcdStorage) Store(ctx context.Context, key string, value []byte) error {
	if cleanKey(key) == "" {
		return errors.New("storing an empty key")
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	_, err := s.cli.Txn(ctx).Then(
		clientv3.OpPut(s.dataKey(key), string(value)),
		clientv3.OpPut(s.metaKey(key), now),
	).Commit()
	if err != nil {
		return fmt.Errorf("storing %s in etcd: %w", key, err)
	}
	return nil
}

// Load returns the value at key, or an error wrapping fs.ErrNotExist.
func (s *etcdStorage) Load(ctx context.Context, key string) ([]byte, error) {
	resp, err := s.cli.Get(ctx, s.dataKey(key))
	if err != nil {
		return nil, fmt.Errorf("loading %s from etcd: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, &fs.PathError{Op: "load", Path: key, Err: fs.ErrNotExist}
	}
	return resp.Kvs[0].Value, nil
}

// Delete removes key and, if it is a directory, every key below it. A
// missing key is not an error.
func (s *etcdStorage) Delete(ctx context.Context, key string) error {
	if cleanKey(key) == "" {
		return errors.New("deleting the root key: refused")
	}
	_, err := s.cli.Txn(ctx).Then(
		clientv3.OpDelete(s.dataKey(key)),
		clientv3.OpDelete(dirPrefix(s.dataKey(key)), clientv3.WithPrefix()),
		clientv3.OpDelete(s.metaKey(key)),
		clientv3.OpDelete(dirPrefix(s.metaKey(key)), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return fmt.Errorf("deleting %s from etcd: %w", key, err)
	}
	return nil
}

// Exists reports whether key is a file or a directory. An etcd error
// reports false.
func (s *etcdStorage) Exists(ctx context.Context, key string) bool {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.dataKey(key), clientv3.WithCountOnly()),
		clientv3.OpGet(dirPrefix(s.dataKey(key)), clientv3.WithPrefix(), clientv3.WithCountOnly()),
	).Commit()
	if err != nil {
		return false
	}
	return resp.Responses[0].GetResponseRange().Count > 0 || resp.Responses[1].GetResponseRange().Count > 0
}

// List returns the keys below dir: its direct children (files and
// directories) or, when recursive, every file and directory below it, in
// sorted order. A missing dir is fs.ErrNotExist; a file has no children.
func (s *etcdStorage) List(ctx context.Context, dir string, recursive bool) ([]string, error) {
	dir = cleanKey(dir)
	base := dirPrefix(s.target.Prefix + "/data/" + dir)
	if dir == "" {
		base = s.target.Prefix + "/data/"
	}
	resp, err := s.cli.Get(ctx, base, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("listing %s in etcd: %w", dir, err)
	}
	if len(resp.Kvs) == 0 {
		if dir != "" {
			r, err := s.cli.Get(ctx, s.dataKey(dir), clientv3.WithCountOnly())
			if err != nil {
				return nil, fmt.Errorf("listing %s in etcd: %w", dir, err)
			}
			if r.Count > 0 {
				return nil, nil
			}
		}
		return nil, &fs.PathError{Op: "list", Path: dir, Err: fs.ErrNotExist}
	}
	seen := map[string]bool{}
	var keys []string
	add := func(k string) {
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	for _, kv := range resp.Kvs {
		parts := strings.Split(strings.TrimPrefix(string(kv.Key), base), "/")
		if !recursive {
			add(path.Join(dir, parts[0]))
			continue
		}
		for i := range parts {
			add(path.Join(dir, path.Join(parts[:i+1]...)))
		}
	}
	slices.Sort(keys)
	return keys, nil
}

// Stat describes key. A directory's Modified is the latest Store below it.
func (s *etcdStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	latest := []clientv3.OpOption{clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend), clientv3.WithLimit(1)}
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.dataKey(key)),
		clientv3.OpGet(s.metaKey(key)),
		clientv3.OpGet(dirPrefix(s.dataKey(key)), clientv3.WithPrefix(), clientv3.WithCountOnly()),
		clientv3.OpGet(dirPrefix(s.metaKey(key)), latest...),
	).Commit()
	if err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("stat %s in etcd: %w", key, err)
	}
	r := func(i int) *clientv3.GetResponse {
		return (*clientv3.GetResponse)(resp.Responses[i].GetResponseRange())
	}
	modified := func(g *clientv3.GetResponse) time.Time {
		if len(g.Kvs) == 0 {
			return time.Time{}
		}
		t, _ := time.Parse(time.RFC3339Nano, string(g.Kvs[0].Value))
		return t
	}
	switch {
	case len(r(0).Kvs) > 0:
		return certmagic.KeyInfo{Key: key, IsTerminal: true, Size: int64(len(r(0).Kvs[0].Value)), Modified: modified(r(1))}, nil
	case r(2).Count > 0:
		return certmagic.KeyInfo{Key: key, IsTerminal: false, Modified: modified(r(3))}, nil
	}
	return certmagic.KeyInfo{}, &fs.PathError{Op: "stat", Path: key, Err: fs.ErrNotExist}
}

// Lock blocks until this process holds the lock name or ctx is done.
func (s *etcdStorage) Lock(ctx context.Context, name string) error {
	for {
		ok, rev, err := s.tryLock(ctx, name)
		if err != nil || ok {
			return err
		}
		if err := s.waitRelease(ctx, name, rev); err != nil {
			return err
		}
	}
}

// TryLock takes the lock name if it is free, without waiting.
func (s *etcdStorage) TryLock(ctx context.Context, name string) (bool, error) {
	ok, _, err := s.tryLock(ctx, name)
	return ok, err
}

// tryLock makes one attempt; when the lock is taken it returns the revision
// the attempt saw, to watch from.
func (s *etcdStorage) tryLock(ctx context.Context, name string) (bool, int64, error) {
	lease, err := s.cli.Grant(ctx, int64(math.Ceil(s.ttl.Seconds())))
	if err != nil {
		return false, 0, fmt.Errorf("locking %s: granting an etcd lease: %w", name, err)
	}
	release := func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		s.cli.Revoke(rctx, lease.ID) // on failure the lease expires by itself
	}
	key := s.lockKey(name)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, s.owner, clientv3.WithLease(lease.ID))).
		Commit()
	if err != nil {
		release()
		return false, 0, fmt.Errorf("locking %s in etcd: %w", name, err)
	}
	if !resp.Succeeded {
		release()
		return false, resp.Header.Revision, nil
	}
	// The keep-alive outlives ctx (the caller's request may end while the
	// lock is held); Unlock or Close ends it.
	kctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	ka, err := s.cli.KeepAlive(kctx, lease.ID)
	if err != nil {
		stop()
		release()
		return false, 0, fmt.Errorf("locking %s: keeping the etcd lease alive: %w", name, err)
	}
	h := &heldLock{lease: lease.ID, stop: stop, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		for range ka {
		}
		if kctx.Err() == nil {
			// The lease could not be renewed (etcd unreachable for a whole
			// TTL): another replica may take the lock now.
			s.log.Warn("etcd lock lease lost while held", "lock", name, "ttl_seconds", s.ttl.Seconds())
		}
	}()
	s.mu.Lock()
	s.held[name] = h
	s.mu.Unlock()
	return true, 0, nil
}

// waitRelease returns when the lock key is deleted after rev (released or
// expired), after a TTL at the latest (in case a watch event is lost), or
// with ctx's error.
func (s *etcdStorage) waitRelease(ctx context.Context, name string, rev int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := s.cli.Watch(wctx, s.lockKey(name), clientv3.WithRev(rev+1), clientv3.WithFilterPut())
	t := time.NewTimer(s.ttl)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("waiting for lock %s: %w", name, ctx.Err())
	case <-wch:
	case <-t.C:
	}
	return nil
}

// Unlock releases the lock name held by this process: its lease is
// revoked, which deletes the key and wakes the waiters.
func (s *etcdStorage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	h := s.held[name]
	delete(s.held, name)
	s.mu.Unlock()
	if h == nil {
		return fmt.Errorf("unlocking %s: not held by this process", name)
	}
	h.stop()
	<-h.done
	if _, err := s.cli.Revoke(ctx, h.lease); err != nil {
		return fmt.Errorf("unlocking %s: revoking the etcd lease (it expires within %v): %w", name, s.ttl, err)
	}
	return nil
}
