// Package dirwatch tells a caller when files in a few directories may have
// changed: on file-system events, debounced, and on a timer because events
// can be lost (some volumes deliver none) and a directory can appear later.
// Static certificate files and dir:// config sources use it to notice
// editors' renames and the kubelet's ..data symlink swaps, which a watch on
// the files themselves would miss. It reads no files: the caller re-reads
// and compares content.
package dirwatch

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Config says what to watch.
type Config struct {
	// Dirs are watched non-recursively. A directory that is missing or
	// removed is added again at each tick.
	Dirs []string
	// Debounce is how long events must be quiet before Changed is called;
	// a kubelet swap or an editor's save is several events. Zero calls it
	// on every event.
	Debounce time.Duration
	// Interval is the period of the timer that calls Changed regardless of
	// events. It must be positive.
	Interval time.Duration
	// Logger receives watch problems. If nil, they are discarded.
	Logger *slog.Logger
}

// Run calls changed after each settled burst of events and every Interval,
// until ctx is done; then it returns nil. Without inotify it degrades to the
// timer alone, with a warning. Calls to changed never overlap.
func Run(ctx context.Context, cfg Config, changed func(context.Context)) error {
	if cfg.Interval <= 0 {
		return errors.New("dirwatch: interval must be positive")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var events <-chan fsnotify.Event
	var errs <-chan error
	watched := map[string]bool{}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		log.Warn("file watching unavailable; relying on periodic checks", "err", err)
	} else {
		defer w.Close()
		events, errs = w.Events, w.Errors
	}
	// watch adds the directories not watched yet; it is retried at each
	// tick so that a directory created later is picked up.
	watch := func() {
		if w == nil {
			return
		}
		for _, d := range cfg.Dirs {
			if watched[d] {
				continue
			}
			if err := w.Add(d); err == nil {
				watched[d] = true
			}
		}
	}
	watch()

	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
				if watched[ev.Name] {
					watched[ev.Name] = false // the directory itself went away
				}
			}
			if cfg.Debounce <= 0 {
				changed(ctx)
				continue
			}
			debounce.Reset(cfg.Debounce)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			log.Warn("file watch error", "err", err)
		case <-debounce.C:
			changed(ctx)
		case <-tick.C:
			watch()
			changed(ctx)
		}
	}
}
