package configsync

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/outrider-dev/outrider/internal/etcdclient"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// PublishResult says what a publish changed.
type PublishResult struct {
	// Revision is the etcd revision of the new version; with nothing to
	// change, the current revision.
	Revision int64 `json:"revision"`
	// Put, Deleted and Unchanged count keys.
	Put       int `json:"put"`
	Deleted   int `json:"deleted"`
	Unchanged int `json:"unchanged"`
}

// maxTxnOps is etcd's default --max-txn-ops: a publish is one transaction,
// so a version may change at most this many keys at once.
const maxTxnOps = 128

// PublishEtcdDir makes the files of the local directory dir the keys under
// the etcd location's prefix, in one transaction: changed and new files are
// written, keys with no file are deleted, so that watchers see one new
// revision holding exactly dir. The directory is read with the rules of a
// dir:// source (safe paths, no symlinks leaving it, at least one file).
// File modes are not kept (etcd keys have none; files are written 0644).
func PublishEtcdDir(ctx context.Context, location string, opts etcdclient.Options, dir string) (PublishResult, error) {
	snap, err := newDirSource(dir, SourceOptions{}).read()
	if err != nil {
		return PublishResult{}, err
	}
	files := make(map[string][]byte, len(snap.Files))
	for n, f := range snap.Files {
		files[n] = f.Data
	}
	return publishEtcd(ctx, location, opts, func(context.Context, *clientv3.Client, string) (map[string][]byte, error) {
		return files, nil
	})
}

// RollbackEtcd publishes, as a new revision, the keys the location's prefix
// held at revision rev: rolling back is publishing an earlier version's
// values, so watchers (and history) move forward. rev must not be compacted
// away, and the prefix must have held at least one key then.
func RollbackEtcd(ctx context.Context, location string, opts etcdclient.Options, rev int64) (PublishResult, error) {
	if rev <= 0 {
		return PublishResult{}, fmt.Errorf("configsync: rollback: revision %d: want a positive etcd revision", rev)
	}
	return publishEtcd(ctx, location, opts, func(ctx context.Context, cli *clientv3.Client, prefix string) (map[string][]byte, error) {
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
		if errors.Is(err, rpctypes.ErrCompacted) {
			return nil, fmt.Errorf("configsync: rollback: revision %d was compacted away; publish a directory instead", rev)
		}
		if errors.Is(err, rpctypes.ErrFutureRev) {
			return nil, fmt.Errorf("configsync: rollback: revision %d does not exist yet", rev)
		}
		if err != nil {
			return nil, fmt.Errorf("configsync: reading revision %d: %w", rev, err)
		}
		if len(resp.Kvs) == 0 {
			return nil, fmt.Errorf("%w: no keys under %s at revision %d", ErrEmpty, prefix, rev)
		}
		files := make(map[string][]byte, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			files[strings.TrimPrefix(string(kv.Key), prefix)] = kv.Value
		}
		return files, nil
	})
}

// publishEtcd writes the files want returns as the keys under the prefix,
// retrying when someone else changed the prefix between our read and our
// transaction (optimistic concurrency on the prefix's ModRevision).
func publishEtcd(ctx context.Context, location string, opts etcdclient.Options,
	want func(context.Context, *clientv3.Client, string) (map[string][]byte, error)) (PublishResult, error) {
	t, err := etcdclient.ParseURL(location)
	if err != nil {
		return PublishResult{}, fmt.Errorf("configsync: %w", err)
	}
	prefix := t.Prefix + "/"
	cli, err := etcdclient.New(t, opts)
	if err != nil {
		return PublishResult{}, fmt.Errorf("configsync: %w", err)
	}
	defer cli.Close()
	files, err := want(ctx, cli, prefix)
	if err != nil {
		return PublishResult{}, err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	if err := (&etcdSource{target: t, prefix: prefix}).checkFiles(files); err != nil {
		return PublishResult{}, err
	}
	for attempt := 0; ; attempt++ {
		cur, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			return PublishResult{}, fmt.Errorf("configsync: listing %s: %w", t, err)
		}
		have := map[string][]byte{}
		for _, kv := range cur.Kvs {
			have[strings.TrimPrefix(string(kv.Key), prefix)] = kv.Value
		}
		var ops []clientv3.Op
		res := PublishResult{Revision: cur.Header.Revision}
		for _, n := range names {
			if old, ok := have[n]; ok && string(old) == string(files[n]) {
				res.Unchanged++
				continue
			}
			ops = append(ops, clientv3.OpPut(prefix+n, string(files[n])))
			res.Put++
		}
		for n := range have {
			if _, ok := files[n]; !ok {
				ops = append(ops, clientv3.OpDelete(prefix+n))
				res.Deleted++
			}
		}
		if len(ops) == 0 {
			return res, nil
		}
		if len(ops) > maxTxnOps {
			return PublishResult{}, fmt.Errorf("configsync: publish would change %d keys in one transaction; etcd allows %d by default (--max-txn-ops)", len(ops), maxTxnOps)
		}
		// Nothing under the prefix changed since we listed it.
		unchanged := clientv3.Compare(clientv3.ModRevision(prefix).WithPrefix(), "<", cur.Header.Revision+1)
		resp, err := cli.Txn(ctx).If(unchanged).Then(ops...).Commit()
		if err != nil {
			return PublishResult{}, fmt.Errorf("configsync: publishing to %s: %w", t, err)
		}
		if resp.Succeeded {
			res.Revision = resp.Header.Revision
			return res, nil
		}
		if attempt >= 5 {
			return PublishResult{}, fmt.Errorf("configsync: publishing to %s: the prefix keeps changing under us", t)
		}
	}
}

// checkFiles applies the snapshot rules to files about to be published, so
// that a publish never produces a version every watcher would refuse.
func (s *etcdSource) checkFiles(files map[string][]byte) error {
	_, err := s.snapshot(files, 0)
	return err
}
