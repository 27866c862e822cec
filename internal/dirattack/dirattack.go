// Package dirattack is a hostile neighbour for tests: it keeps planting
// symlinks that lead out of a directory laid out as the kubelet lays out a
// ConfigMap volume (..data, ..data_tmp*, ..link_*, ..<timestamp> version
// directories, top-level names), as a compromised app sharing that
// directory could. It never follows a symlink it planted, so whatever
// changes outside was written by the code under test.
package dirattack

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fsnotify/fsnotify"
)

// Outside makes a directory beside dir holding files with the names a
// config writer uses, and an empty directory where a write through a
// symlink would succeed, and returns its path and a picture of it.
func Outside(t testing.TB, dir string) (string, map[string]string) {
	t.Helper()
	out := filepath.Join(filepath.Dir(dir), "outside")
	for _, f := range []string{"victim", "app.conf", "a.conf", "conf.d/a.conf"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(out, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(out, f), []byte("outside, must stay\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(out, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	return out, Tree(t, out)
}

// Tree describes every entry below dir without following symlinks: type,
// permission bits, content hash or link target.
func Tree(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			out[rel] = "symlink -> " + target
		case fi.IsDir():
			out[rel] = fmt.Sprintf("dir %v", fi.Mode().Perm())
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			out[rel] = fmt.Sprintf("file %v %s", fi.Mode().Perm(), hex.EncodeToString(sum[:8]))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Attacker plants symlinks into a directory until Stop.
type Attacker struct {
	dir, out string
	// topNames are the top-level names the app reads ("conf.d/" for a
	// directory); in every round they are replaced by symlinks out for a
	// moment, then removed again.
	topNames []string
	stop     atomic.Bool
	wg       sync.WaitGroup
	watcher  *fsnotify.Watcher
	plants   atomic.Int64
	rounds   atomic.Int64
}

// Start starts attacking dir with symlinks into out (made by Outside): one
// goroutine is told of each new version directory by inotify and plants a
// symlink inside it at once (the staging window); another polls and plants
// everywhere else — inside every version directory, at the temporary
// links, at ..data, and at topNames ("app.conf", "conf.d/" for a
// directory).
func Start(t testing.TB, dir, out string, topNames ...string) *Attacker {
	t.Helper()
	a := &Attacker{dir: dir, out: out, topNames: topNames}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(dir); err != nil {
		w.Close()
		t.Fatal(err)
	}
	a.watcher = w
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		for ev := range w.Events {
			if ev.Op&fsnotify.Create != 0 && isVersionName(filepath.Base(ev.Name)) {
				a.plant(filepath.Join(ev.Name, "conf.d"), filepath.Join(out, "empty"))
			}
		}
	}()
	go a.poll()
	t.Cleanup(func() { a.Stop() })
	return a
}

// Stop ends the attack and removes the top-level symlinks it left, and
// returns how many symlinks were planted in how many rounds.
func (a *Attacker) Stop() (plants, rounds int64) {
	if a.stop.CompareAndSwap(false, true) {
		a.watcher.Close()
		a.wg.Wait()
		a.untop()
	}
	return a.plants.Load(), a.rounds.Load()
}

// Plants returns how many symlinks were planted so far.
func (a *Attacker) Plants() int64 { return a.plants.Load() }

func isVersionName(n string) bool { return len(n) > 3 && n[:2] == ".." && n[2] >= '0' && n[2] <= '9' }

func isDir(p string) bool { fi, err := os.Lstat(p); return err == nil && fi.IsDir() }

// plant puts a symlink to target at p, replacing what is there.
func (a *Attacker) plant(p, target string) {
	if os.Symlink(target, p) == nil {
		a.plants.Add(1)
		return
	}
	tmp := p + ".evil"
	os.Remove(tmp)
	if os.Symlink(target, tmp) == nil && os.Rename(tmp, p) == nil {
		a.plants.Add(1)
	}
}

// untop removes the top-level symlinks of ours, which lead out.
func (a *Attacker) untop() {
	for _, n := range a.topNames {
		p := filepath.Join(a.dir, strings.TrimSuffix(n, "/"))
		if t, err := os.Readlink(p); err == nil && strings.HasPrefix(t, a.out) {
			os.Remove(p)
		}
	}
}

func (a *Attacker) poll() {
	defer a.wg.Done()
	victim := filepath.Join(a.out, "victim")
	for i := 0; !a.stop.Load(); i++ {
		a.rounds.Add(1)
		entries, _ := os.ReadDir(a.dir)
		for _, e := range entries {
			n, p := e.Name(), filepath.Join(a.dir, e.Name())
			switch {
			case isVersionName(n) && e.IsDir():
				if isDir(filepath.Join(p, "conf.d")) {
					a.plant(filepath.Join(p, "conf.d", "a.conf"), victim)
				} else {
					a.plant(filepath.Join(p, "conf.d"), filepath.Join(a.out, "empty"))
				}
				a.plant(filepath.Join(p, "app.conf"), victim)
			case strings.HasPrefix(n, "..data_tmp"), strings.HasPrefix(n, "..link_"):
				a.plant(p, a.out)
			}
		}
		a.plant(filepath.Join(a.dir, "..data_tmp"), a.out)
		// The names the app reads, and ..data itself, for a moment: the
		// window between a writer's checks and its writes.
		for _, n := range a.topNames {
			if d, ok := strings.CutSuffix(n, "/"); ok {
				a.plant(filepath.Join(a.dir, d), filepath.Join(a.out, "empty"))
			} else {
				a.plant(filepath.Join(a.dir, n), victim)
			}
		}
		if i%4 == 0 {
			a.plant(filepath.Join(a.dir, "..data"), a.out)
		}
		a.untop()
	}
}
