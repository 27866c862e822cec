package dirwatch

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// calls runs Run in the background and returns a channel that receives one
// value per call of changed.
func calls(t *testing.T, cfg Config) <-chan struct{} {
	t.Helper()
	ch := make(chan struct{}, 100)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, func(context.Context) { ch <- struct{}{} }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	return ch
}

func expectCall(t *testing.T, ch <-chan struct{}, within time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(within):
		t.Fatalf("%s: no call within %v", what, within)
	}
}

func TestEventsAreDebounced(t *testing.T) {
	dir := t.TempDir()
	ch := calls(t, Config{Dirs: []string{dir}, Debounce: 200 * time.Millisecond, Interval: time.Hour})
	time.Sleep(100 * time.Millisecond) // let the watch be added
	for i := range 5 {
		os.WriteFile(filepath.Join(dir, "f"), []byte{byte(i)}, 0o644)
	}
	expectCall(t, ch, 5*time.Second, "burst of writes")
	select {
	case <-ch:
		t.Error("a burst of five writes caused more than one call")
	case <-time.After(500 * time.Millisecond):
	}
}

func TestDataSwapIsSeen(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "..v1"), 0o755)
	os.Symlink("..v1", filepath.Join(dir, "..data"))
	ch := calls(t, Config{Dirs: []string{dir}, Debounce: 50 * time.Millisecond, Interval: time.Hour})
	time.Sleep(100 * time.Millisecond)
	os.Mkdir(filepath.Join(dir, "..v2"), 0o755)
	os.Symlink("..v2", filepath.Join(dir, "..data_tmp"))
	os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data"))
	expectCall(t, ch, 5*time.Second, "..data swap")
}

func TestTimerAndLateDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "later")
	ch := calls(t, Config{Dirs: []string{dir}, Interval: 100 * time.Millisecond})
	expectCall(t, ch, 5*time.Second, "tick with the directory missing")
	os.Mkdir(dir, 0o755)
	expectCall(t, ch, 5*time.Second, "tick after the directory appeared")
}

func TestDirectoryCreatedLaterIsWatched(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "later")
	// Ticks every 300 ms add the directory; events then arrive within
	// milliseconds, far sooner than the next tick.
	ch := calls(t, Config{Dirs: []string{dir}, Interval: 300 * time.Millisecond})
	os.Mkdir(dir, 0o755)
	expectCall(t, ch, 5*time.Second, "first tick")
	expectCall(t, ch, 5*time.Second, "tick that adds the watch")
	for range 10 {
		for len(ch) > 0 {
			<-ch
		}
		start := time.Now()
		os.WriteFile(filepath.Join(dir, "f"), nil, 0o644)
		expectCall(t, ch, 5*time.Second, "event")
		if time.Since(start) < 100*time.Millisecond {
			return // an event, not a tick, made the call
		}
	}
	t.Error("writes in a directory created later were only noticed by ticks")
}

func TestIntervalRequired(t *testing.T) {
	if err := Run(t.Context(), Config{}, func(context.Context) {}); err == nil {
		t.Error("Run with no interval: want an error")
	}
}
