package configsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outrider-dev/outrider/internal/etcdclient"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdSource is etcd://host:2379[,host2:2379]/prefix: the files of a version
// are the keys under "/prefix/" (the trailing slash keeps "/prefix2/…"
// out); the key "/prefix/sub/x.conf" is the file "sub/x.conf" (mode 0644).
// The version is the etcd revision the files were read at.
//
// Watch lists once, then follows a watch from the listed revision, applying
// each event to its copy of the files and offering the result. A compacted
// revision, a lost leader or a broken watch ends the watch: the source
// re-lists. Every Interval it re-lists anyway, in case an event was lost.
// Content hashes decide what changed, so neither a re-list nor an
// unrelated write elsewhere in etcd produces a new version.
type etcdSource struct {
	target   etcdclient.Target
	prefix   string // target.Prefix + "/"
	opts     etcdclient.Options
	interval time.Duration
	log      *slog.Logger

	mu       sync.Mutex
	cli      *clientv3.Client // while Watch runs; Fetch borrows it
	lastHash string
}

func newEtcdSource(rawURL string, opts SourceOptions) (*etcdSource, error) {
	t, err := etcdclient.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("configsync: source: %w", err)
	}
	if err := opts.Etcd.Validate(); err != nil {
		return nil, fmt.Errorf("configsync: source %s: %w", t, err)
	}
	return &etcdSource{target: t, prefix: t.Prefix + "/", opts: opts.Etcd, interval: opts.Interval, log: opts.Logger}, nil
}

func (s *etcdSource) String() string { return s.target.String() }

// Fetch lists the prefix now. Outside Watch it uses a client of its own.
func (s *etcdSource) Fetch(ctx context.Context) (*Snapshot, error) {
	s.mu.Lock()
	cli := s.cli
	s.mu.Unlock()
	if cli == nil {
		c, err := etcdclient.New(s.target, s.opts)
		if err != nil {
			return nil, fmt.Errorf("configsync: %w", err)
		}
		defer c.Close()
		cli = c
	}
	files, rev, err := s.list(ctx, cli)
	if err != nil {
		return nil, err
	}
	snap, err := s.snapshot(files, rev)
	if err != nil {
		return nil, err
	}
	if !s.changed(snap) {
		return nil, ErrNotModified
	}
	return snap, nil
}

// list reads every key under the prefix and the revision they were read at.
func (s *etcdSource) list(ctx context.Context, cli *clientv3.Client) (map[string][]byte, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, s.prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("configsync: listing %s: %w", s.target, err)
	}
	files := make(map[string][]byte, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		files[strings.TrimPrefix(string(kv.Key), s.prefix)] = kv.Value
	}
	return files, resp.Header.Revision, nil
}

// snapshot checks files as every source's snapshot is checked: safe paths,
// limits, at least one file.
func (s *etcdSource) snapshot(files map[string][]byte, rev int64) (*Snapshot, error) {
	snap := &Snapshot{Version: strconv.FormatInt(rev, 10), Files: make(map[string]File, len(files))}
	total := 0
	for name, data := range files {
		total += len(data)
		snap.Files[name] = File{Data: data, Mode: DefaultMode}
	}
	if total > maxBundleBytes {
		return nil, fmt.Errorf("%w: %d bytes under %s (limit %d)", ErrInvalidBundle, total, s.target, maxBundleBytes)
	}
	if err := snap.check(); err != nil {
		return nil, err
	}
	return snap, nil
}

// changed reports whether snap differs from the last snapshot handed out,
// and remembers it.
func (s *etcdSource) changed(snap *Snapshot) bool {
	h := snap.Hash()
	s.mu.Lock()
	defer s.mu.Unlock()
	if h == s.lastHash {
		return false
	}
	s.lastHash = h
	return true
}

// offer sends the snapshot of files at rev when its content is new.
func (s *etcdSource) offer(ctx context.Context, updates chan<- Update, files map[string][]byte, rev int64, took time.Duration) {
	snap, err := s.snapshot(maps.Clone(files), rev)
	switch {
	case err != nil:
		send(ctx, updates, Update{Err: err, Duration: took})
	case !s.changed(snap):
		send(ctx, updates, Update{Err: ErrNotModified, Duration: took})
	default:
		send(ctx, updates, Update{Snapshot: snap, Duration: took})
	}
}

func (s *etcdSource) Watch(ctx context.Context, updates chan<- Update) error {
	cli, err := etcdclient.New(s.target, s.opts)
	if err != nil {
		return err // bad TLS or password files: nothing to retry
	}
	s.mu.Lock()
	s.cli = cli
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.cli = nil
		s.mu.Unlock()
		cli.Close()
	}()
	bo := newBackoff(min(s.interval, time.Second))
	for ctx.Err() == nil {
		start := time.Now()
		files, rev, err := s.list(ctx, cli)
		if err != nil {
			send(ctx, updates, Update{Err: err, Duration: time.Since(start)})
			sleep(ctx, bo.failure())
			continue
		}
		bo.success()
		s.offer(ctx, updates, files, rev, time.Since(start))
		s.follow(ctx, cli, updates, files, rev)
	}
	return nil
}

// follow applies watch events after rev to files and offers each result. It
// returns when ctx is done, the watch breaks or is compacted (the caller
// re-lists), or Interval has passed.
func (s *etcdSource) follow(ctx context.Context, cli *clientv3.Client, updates chan<- Update, files map[string][]byte, rev int64) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := cli.Watch(wctx, s.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	resync := time.NewTimer(jitter(s.interval))
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-resync.C:
			return
		case wr, ok := <-wch:
			if !ok {
				s.log.Warn("etcd watch closed; re-listing", "source", s.target.String())
				return
			}
			if err := wr.Err(); err != nil {
				if wr.CompactRevision != 0 || errors.Is(err, rpctypes.ErrCompacted) {
					s.log.Info("etcd revision compacted while watching; re-listing", "source", s.target.String(),
						"compact_revision", wr.CompactRevision)
				} else {
					s.log.Warn("etcd watch failed; re-listing", "source", s.target.String(), "err", err)
				}
				return
			}
			if len(wr.Events) == 0 {
				continue // progress notification
			}
			for _, ev := range wr.Events {
				name := strings.TrimPrefix(string(ev.Kv.Key), s.prefix)
				if ev.Type == clientv3.EventTypeDelete {
					delete(files, name)
				} else {
					files[name] = ev.Kv.Value
				}
			}
			s.offer(ctx, updates, files, wr.Header.Revision, 0)
		}
	}
}
