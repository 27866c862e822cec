package configsync

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"

	"github.com/outrider-dev/outrider/internal/etcdclient"
)

// Source delivers complete snapshots of the desired files.
//
// Implementations must be safe for concurrent use: Fetch may be called (on
// SIGHUP) while Watch runs, and both must honour ctx. A poll-based source
// (http) implements Watch by calling Fetch on a jittered timer. A watch-based
// source (etcd) lists once, then follows a watch from the listed revision and
// sends a full snapshot after each change with the revision as
// [Snapshot.Version], re-listing when the watch ends (compaction).
type Source interface {
	// Fetch returns the current snapshot, or ErrNotModified when nothing
	// changed since the snapshot last returned by Fetch or sent by Watch.
	// An error other than ErrNotModified means "keep what you have".
	Fetch(ctx context.Context) (*Snapshot, error)
	// Watch sends an Update for every new snapshot and every failed attempt
	// until ctx is done, retrying transient errors itself with capped
	// back-off. It returns nil when ctx is done, or an error when it cannot
	// go on at all.
	Watch(ctx context.Context, updates chan<- Update) error
	// String names the source for logs and /status, without credentials.
	String() string
}

// Update is one result of [Source.Watch]: a new snapshot, or the error of
// one attempt (ErrNotModified for an unchanged poll).
type Update struct {
	Snapshot *Snapshot
	Err      error
	// Duration is how long the attempt took; zero when not measured.
	Duration time.Duration
}

// SourceOptions are what [OpenSource] passes to a source.
type SourceOptions struct {
	File       string        // single-file mode (http only)
	TokenFile  string        // bearer token file (http only)
	Interval   time.Duration // poll or rescan period
	HTTPClient *http.Client
	Logger     *slog.Logger
	Etcd       etcdclient.Options // TLS and auth of etcd sources
}

// OpenSource returns the Source for rawURL by its scheme: http and https
// (polled), dir (a watched directory, dir:///path), etcd (watched keys under
// a prefix, etcd://host:2379[,host2:2379]/prefix). Other schemes are refused
// with a clear error.
func OpenSource(rawURL string, opts SourceOptions) (Source, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("configsync: source %q: not a URL", rawURL)
	}
	if opts.Interval <= 0 {
		opts.Interval = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return nil, fmt.Errorf("configsync: source %q: no host", rawURL)
		}
		return newHTTPSource(u, opts), nil
	case "dir":
		if u.Host != "" || u.Path == "" || u.Path[0] != '/' {
			return nil, fmt.Errorf("configsync: source %q: want dir:///absolute/path", rawURL)
		}
		return newDirSource(u.Path, opts), nil
	case "etcd":
		return newEtcdSource(rawURL, opts) // etcd.go
	default:
		return nil, fmt.Errorf("configsync: source %q: unknown scheme %q (want http, https or dir)", rawURL, u.Scheme)
	}
}

// send delivers u unless ctx is done first.
func send(ctx context.Context, ch chan<- Update, u Update) {
	select {
	case ch <- u:
	case <-ctx.Done():
	}
}

// jitter returns d ± 10%.
func jitter(d time.Duration) time.Duration {
	return d - d/10 + time.Duration(rand.Int64N(int64(d)/5+1))
}

// backoff is capped exponential back-off with jitter: from min(interval, 1s)
// doubling up to 8×interval, at most 5m (never below interval).
type backoff struct {
	base, max time.Duration
	next      time.Duration
}

func newBackoff(interval time.Duration) *backoff {
	b := &backoff{base: min(interval, time.Second), max: min(8*interval, 5*time.Minute)}
	b.max = max(b.max, interval)
	return b
}

func (b *backoff) failure() time.Duration {
	if b.next == 0 {
		b.next = b.base
	} else {
		b.next = min(2*b.next, b.max)
	}
	return jitter(b.next)
}

func (b *backoff) success() { b.next = 0 }

// sleep waits d or until ctx is done; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
