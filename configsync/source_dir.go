package configsync

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/outrider-dev/outrider/internal/dirwatch"
)

// dirSource reads a directory, typically a mounted ConfigMap. When the
// directory has the kubelet's ..data symlink, files are read through the
// version directory it points at, and the read is retried if ..data moved
// meanwhile, so a swap is never seen half-way. Changes are noticed with
// fsnotify and, in case an event is missed, by a rescan every interval.
type dirSource struct {
	root     string
	interval time.Duration
	log      *slog.Logger

	mu       sync.Mutex
	lastHash string
}

func newDirSource(root string, opts SourceOptions) *dirSource {
	return &dirSource{root: filepath.Clean(root), interval: opts.Interval, log: opts.Logger}
}

func (s *dirSource) String() string { return "dir://" + s.root }

func (s *dirSource) Fetch(context.Context) (*Snapshot, error) {
	snap, err := s.read()
	if err != nil {
		return nil, err
	}
	h := snap.Hash()
	s.mu.Lock()
	defer s.mu.Unlock()
	if h == s.lastHash {
		return nil, ErrNotModified
	}
	s.lastHash = h
	return snap, nil
}

func (s *dirSource) read() (*Snapshot, error) {
	rootReal, err := filepath.EvalSymlinks(s.root)
	if err != nil {
		return nil, fmt.Errorf("configsync: reading source dir: %w", err)
	}
	dataLink := filepath.Join(rootReal, dataName)
	for range 5 {
		target, err := os.Readlink(dataLink)
		if errors.Is(err, fs.ErrNotExist) {
			return s.readTree(rootReal, rootReal)
		}
		if err != nil {
			return nil, fmt.Errorf("configsync: reading source dir: %w", err)
		}
		if filepath.IsAbs(target) || strings.Contains(target, "/") {
			return nil, fmt.Errorf("%w: %s points at %q, outside the source dir", ErrUnsafePath, dataLink, target)
		}
		snap, err := s.readTree(rootReal, filepath.Join(rootReal, target))
		again, err2 := os.Readlink(dataLink)
		if err2 == nil && again == target && !errors.Is(err, fs.ErrNotExist) {
			return snap, err
		}
		// ..data was swapped while we read: read the new version.
	}
	return nil, errors.New("configsync: source dir keeps changing while being read")
}

// readTree reads every regular file below dir (skipping names starting with
// ".."), following symlinks only when they stay inside root.
func (s *dirSource) readTree(root, dir string) (*Snapshot, error) {
	snap := &Snapshot{Files: map[string]File{}}
	var walk func(abs, rel string, depth int) error
	walk = func(abs, rel string, depth int) error {
		if depth > 32 {
			return fmt.Errorf("%w: %q: directories nested too deep", ErrInvalidBundle, rel)
		}
		entries, err := os.ReadDir(abs)
		if err != nil {
			return fmt.Errorf("configsync: reading source dir: %w", err)
		}
		for _, e := range entries {
			name := e.Name()
			if strings.HasPrefix(name, "..") {
				continue
			}
			p, r := filepath.Join(abs, name), filepath.ToSlash(filepath.Join(rel, name))
			if e.Type()&fs.ModeSymlink != 0 {
				real, err := filepath.EvalSymlinks(p)
				if errors.Is(err, fs.ErrNotExist) {
					continue // dangling: a key being removed
				}
				if err != nil {
					return fmt.Errorf("configsync: reading source dir: %w", err)
				}
				if !within(root, real) {
					return fmt.Errorf("%w: %q is a symlink leaving the source dir", ErrUnsafePath, r)
				}
				p = real
			}
			st, err := os.Stat(p)
			if err != nil {
				return fmt.Errorf("configsync: reading source dir: %w", err)
			}
			switch {
			case st.IsDir():
				if err := walk(p, r, depth+1); err != nil {
					return err
				}
			case st.Mode().IsRegular():
				if st.Size() > maxBundleBytes {
					return fmt.Errorf("%w: %q is larger than %d bytes", ErrInvalidBundle, r, maxBundleBytes)
				}
				data, err := os.ReadFile(p)
				if err != nil {
					return fmt.Errorf("configsync: reading source dir: %w", err)
				}
				snap.Files[r] = File{Data: data, Mode: st.Mode().Perm()}
			}
		}
		return nil
	}
	if err := walk(dir, "", 0); err != nil {
		return nil, err
	}
	if err := snap.check(); err != nil {
		return nil, err
	}
	return snap, nil
}

func (s *dirSource) Watch(ctx context.Context, updates chan<- Update) error {
	poll := func(ctx context.Context) {
		start := time.Now()
		snap, err := s.Fetch(ctx)
		send(ctx, updates, Update{Snapshot: snap, Err: err, Duration: time.Since(start)})
	}
	poll(ctx)
	// Each event re-reads the whole tree: the syncer debounces and compares
	// content hashes, so a burst costs reads, never extra applies.
	return dirwatch.Run(ctx, dirwatch.Config{Dirs: []string{s.root}, Interval: s.interval, Logger: s.log}, poll)
}
