package configsync

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/outrider-dev/outrider/internal/dirattack"
)

// The app sharing --dir may be hostile: it can plant a symlink at any name,
// at any moment. These tests plant them where configsync writes, renames,
// removes and reads, and check that nothing outside --dir is ever touched
// (issue #16).

func outsideDir(t *testing.T, l *layout) (string, map[string]string) {
	t.Helper()
	return dirattack.Outside(t, l.dir)
}

func checkOutside(t *testing.T, out string, want map[string]string) {
	t.Helper()
	if diff := cmp.Diff(want, dirattack.Tree(t, out)); diff != "" {
		t.Errorf("something outside --dir changed (-before +after):\n%s", diff)
	}
}

func TestSymlinkPlantedAtTargetPathIsNeverFollowed(t *testing.T) {
	t.Parallel()
	l := newLayout(t)
	out, before := outsideDir(t, l)
	os.Symlink(filepath.Join(out, "victim"), filepath.Join(l.dir, "app.conf"))
	os.Symlink(out, filepath.Join(l.dir, "conf.d"))
	os.Symlink("..data/../../outside/victim", filepath.Join(l.dir, "other.conf"))
	for _, s := range []*Snapshot{
		snap("app.conf", "mine"),
		snap("conf.d/a.conf", "mine"),
		snap("other.conf", "mine"),
	} {
		live, err := l.apply(s, nil)
		var refused *refusedError
		if live || !errors.Is(err, ErrUnsafePath) || !errors.As(err, &refused) {
			t.Errorf("apply(%v) = %v, %v; want refused with ErrUnsafePath", s.names(), live, err)
		}
	}
	checkOutside(t, out, before)

	// Once a version is live, an app that replaces one of our links with a
	// symlink of its own gets it replaced back, never written through.
	apply(t, l, snap("mine.conf", "v1"))
	os.Remove(filepath.Join(l.dir, "mine.conf"))
	os.Symlink(filepath.Join(out, "victim"), filepath.Join(l.dir, "mine.conf"))
	if _, intact, err := l.read(); err != nil || intact {
		t.Errorf("read() after the link was replaced = intact %v, %v; want not intact", intact, err)
	}
	if live, err := l.apply(snap("mine.conf", "v2"), nil); live || !errors.Is(err, ErrUnsafePath) {
		t.Errorf("apply over a foreign symlink = %v, %v; want refused", live, err)
	}
	checkOutside(t, out, before)
}

func TestSymlinkPlantedAtParentDirectoryIsNeverFollowed(t *testing.T) {
	t.Parallel()
	l := newLayout(t)
	out, before := outsideDir(t, l)
	apply(t, l, snap("conf.d/a.conf", "v1", "app.conf", "v1"))
	live, _ := l.live(l.root)
	// Inside the live version directory, conf.d becomes a symlink out.
	ver := filepath.Join(l.dir, live)
	os.RemoveAll(filepath.Join(ver, "conf.d"))
	os.Symlink(out, filepath.Join(ver, "conf.d"))
	got, intact, err := l.read()
	if err != nil || intact {
		t.Errorf("read() = intact %v, %v; want not intact", intact, err)
	}
	if _, ok := got.Files["conf.d/a.conf"]; ok {
		t.Error("read() followed the planted conf.d symlink")
	}
	// Applying the next version removes the old version directory, symlink
	// and all, without descending through it.
	apply(t, l, snap("conf.d/a.conf", "v2", "app.conf", "v2"))
	if _, err := os.Lstat(ver); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("old version directory still there: %v", err)
	}
	checkOutside(t, out, before)
	if got := readFile(t, filepath.Join(l.dir, "conf.d", "a.conf")); got != "v2" {
		t.Errorf("conf.d/a.conf = %q, want v2", got)
	}
}

func TestSymlinkPlantedAtDataIsNeverFollowed(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		plant func(t *testing.T, dir, out string)
	}{
		{"absolute", func(t *testing.T, dir, out string) {
			os.Remove(filepath.Join(dir, dataName))
			os.Symlink(out, filepath.Join(dir, dataName))
		}},
		{"version-named symlink", func(t *testing.T, dir, out string) {
			fake := "..2000_01_01_00_00_00.000000000.1"
			os.Symlink(out, filepath.Join(dir, fake))
			os.Remove(filepath.Join(dir, dataName))
			os.Symlink(fake, filepath.Join(dir, dataName))
		}},
		{"directory", func(t *testing.T, dir, out string) {
			os.Remove(filepath.Join(dir, dataName))
			os.Mkdir(filepath.Join(dir, dataName), 0o755)
			os.Symlink(out, filepath.Join(dir, dataName, "conf.d"))
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := newLayout(t)
			out, before := outsideDir(t, l)
			apply(t, l, snap("app.conf", "v1", "conf.d/a.conf", "v1"))
			tt.plant(t, l.dir, out)
			if got, _, err := l.read(); err == nil && got != nil {
				for n, f := range got.Files {
					if strings.Contains(string(f.Data), "outside") {
						t.Errorf("read() followed ..data to %s", n)
					}
				}
			}
			if err := l.init(); err != nil {
				t.Errorf("init() with a foreign ..data = %v; want it left for the next apply", err)
			}
			// The next apply replaces ..data, and never reads, writes or
			// removes through it.
			apply(t, l, snap("app.conf", "v2", "conf.d/a.conf", "v2"))
			if got := readFile(t, filepath.Join(l.dir, "conf.d", "a.conf")); got != "v2" {
				t.Errorf("conf.d/a.conf = %q, want v2", got)
			}
			checkOutside(t, out, before)
		})
	}
}

// TestSymlinkSwappedInDuringApplyRaceLoop runs applies, reads and clean-ups
// while an attacker goroutine keeps planting symlinks to a directory outside
// --dir at every name configsync uses — top-level names, ..data, the
// temporary links, and inside every version directory, including the one
// being staged — between configsync's checks and its writes.
func TestSymlinkSwappedInDuringApplyRaceLoop(t *testing.T) {
	t.Parallel()
	l := newLayout(t)
	out, before := outsideDir(t, l)
	attacker := dirattack.Start(t, l.dir, out, "app.conf", "conf.d/", "new.conf")
	// At least this many applies, as many symlinks planted, and a tenth of
	// the applies live (the others fail safely, most refused by the checks).
	iterations := 1000
	if testing.Short() {
		iterations = 400
	}
	deadline := time.Now().Add(20 * time.Second)
	applied, refused, checkRefusals := 0, 0, 0
	for i := 0; i < iterations || ((attacker.Plants() < int64(iterations) || applied < iterations/10) && time.Now().Before(deadline)); i++ {
		files := []string{"app.conf", fmt.Sprint("v", i), "conf.d/a.conf", fmt.Sprint("a", i)}
		if i%3 == 0 {
			files = append(files, "new.conf", "n")
		}
		if live, err := l.apply(snap(files...), nil); live {
			applied++
		} else {
			refused++
			var r *refusedError
			if errors.As(err, &r) {
				checkRefusals++
			}
		}
		l.read()
		if i%10 == 0 {
			l.init()
		}
	}
	plants, rounds := attacker.Stop()
	t.Logf("%d applies (%d went live, %d failed safely, %d of them refused by the checks) against %d symlinks planted in %d rounds",
		applied+refused, applied, refused, checkRefusals, plants, rounds)
	checkOutside(t, out, before)
	if plants < int64(iterations) || applied < iterations/10 {
		t.Errorf("%d symlinks planted, %d of %d applies live; the attack did not race with the applies", plants, applied, applied+refused)
	}
	// Once the attack stops, the next apply puts the dir right.
	apply(t, l, snap("app.conf", "final", "conf.d/a.conf", "final"))
	if got := readFile(t, filepath.Join(l.dir, "app.conf")); got != "final" {
		t.Errorf("app.conf = %q after the attack, want final", got)
	}
}

func TestFailedApplyLeavesDirExactlyAsItWas(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 250) + ".conf" // 255 bytes, the longest name there is
	tests := []struct {
		name     string
		next     *Snapshot
		validate func(t *testing.T, dir string) func(string) error
		wantLive bool
	}{
		// Issue #16: the link of a 250-byte name did not fit in its
		// temporary name, the apply failed and left a dangling symlink.
		{name: "255-byte name applies", next: snap("a.conf", "2", long, "2"), wantLive: true},
		{name: "validate refuses", next: snap("a.conf", "2", "b.conf", "2", "conf.d/c", "2"),
			validate: func(*testing.T, string) func(string) error {
				return func(string) error { return ErrValidateFailed }
			}},
		// The app makes a directory at a name of the new version while it
		// is being validated: the swap fails after the links of other new
		// names were made, and must take them back.
		{name: "name taken during validate", next: snap("a.conf", "2", "b.conf", "2", "c.conf", "2"),
			validate: func(t *testing.T, dir string) func(string) error {
				return func(string) error { return os.Mkdir(filepath.Join(dir, "c.conf"), 0o755) }
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := newLayout(t)
			apply(t, l, snap("old.conf", "1", "conf.d/x", "1"))
			before := dirattack.Tree(t, l.dir)
			var validate func(string) error
			if tt.validate != nil {
				validate = tt.validate(t, l.dir)
			}
			live, err := l.apply(tt.next, validate)
			if live != tt.wantLive {
				t.Fatalf("apply = %v, %v; want live %v", live, err, tt.wantLive)
			}
			after := dirattack.Tree(t, l.dir)
			if live {
				if err != nil {
					t.Errorf("apply went live with error %v", err)
				}
				for _, n := range tt.next.names() {
					if got := readFile(t, filepath.Join(l.dir, n)); got != string(tt.next.Files[n].Data) {
						t.Errorf("%s = %q, want %q", n, got, tt.next.Files[n].Data)
					}
				}
				for n, e := range after {
					if strings.HasPrefix(e, "symlink") {
						if _, err := os.Stat(filepath.Join(l.dir, n)); err != nil {
							t.Errorf("dangling symlink %s (%s)", n, e)
						}
					}
				}
				return
			}
			delete(after, "c.conf") // the app's own directory
			if diff := cmp.Diff(before, after); diff != "" {
				t.Errorf("a failed apply (%v) changed dir (-before +after):\n%s", err, diff)
			}
		})
	}
}

func TestStateDirThroughSymlinkIntoDirRefused(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	dir := filepath.Join(base, "shared")
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	os.Symlink(filepath.Join(dir, "sub"), filepath.Join(base, "state-link"))
	os.Symlink(filepath.Join(dir, "not-yet"), filepath.Join(base, "dangling-link"))
	os.Symlink("shared", filepath.Join(base, "relative-link"))
	os.Symlink(dir, filepath.Join(base, "dir-link"))
	for _, tt := range []struct{ dir, state string }{
		{dir, filepath.Join(base, "state-link")},
		{dir, filepath.Join(base, "state-link", "deeper")},
		{dir, filepath.Join(base, "dangling-link", "state")},
		{dir, filepath.Join(base, "relative-link", "state")},
		{filepath.Join(base, "dir-link"), filepath.Join(dir, "state")},
	} {
		err := Config{Source: "http://127.0.0.1/", Dir: tt.dir, StateDir: tt.state}.Validate()
		if err == nil || !strings.Contains(err.Error(), "must not be inside dir") {
			t.Errorf("Validate(dir %s, state %s) = %v; want refused", tt.dir, tt.state, err)
		}
	}
	if err := (Config{Source: "http://127.0.0.1/", Dir: dir, StateDir: filepath.Join(base, "state")}).Validate(); err != nil {
		t.Errorf("a state dir beside dir refused: %v", err)
	}
}

func TestStateKeepsLastVersions(t *testing.T) {
	t.Parallel()
	st := stateStore{dir: t.TempDir(), keep: 3}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i, c := range []string{"1", "2", "3", "2", "4", "5"} {
		if err := st.save(snap("app.conf", c), at.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	h, err := st.history()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range h {
		got = append(got, string(v.Snap.Files["app.conf"].Data))
	}
	// Newest first; the second save of "2" replaced the first.
	if want := []string{"5", "4", "2"}; !cmp.Equal(got, want) {
		t.Errorf("history = %v, want %v", got, want)
	}
	// A corrupt newest file is skipped, and reported.
	names, _ := st.names()
	os.WriteFile(filepath.Join(st.dir, versionsDirName, names[0]), []byte(`{"files":`), 0o600)
	good, _, err := st.load()
	if err == nil || good == nil || string(good.Files["app.conf"].Data) != "4" {
		t.Errorf("load() with a corrupt newest version = %v, %v; want version 4 and an error", good, err)
	}
}
