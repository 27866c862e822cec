package configsync

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newLayout(t *testing.T) *layout {
	t.Helper()
	l := &layout{dir: filepath.Join(t.TempDir(), "shared"), now: time.Now}
	if err := l.init(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.close)
	return l
}

func snap(files ...string) *Snapshot {
	s := &Snapshot{Files: map[string]File{}}
	for i := 0; i+1 < len(files); i += 2 {
		s.Files[files[i]] = File{Data: []byte(files[i+1]), Mode: 0o644}
	}
	return s
}

func apply(t *testing.T, l *layout, s *Snapshot) {
	t.Helper()
	if live, err := l.apply(s, nil); !live || err != nil {
		t.Fatalf("apply: live=%v err=%v", live, err)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSwapMakesVersionLiveThroughLinks(t *testing.T) {
	l := newLayout(t)
	v1 := snap("app.conf", "v=1\n", "conf.d/a.conf", "a1", "old.conf", "o")
	v1.Files["secret.key"] = File{Data: []byte("k"), Mode: 0o600}
	apply(t, l, v1)
	if got := readFile(t, filepath.Join(l.dir, "app.conf")); got != "v=1\n" {
		t.Errorf("app.conf = %q, want v=1", got)
	}
	if got := readFile(t, filepath.Join(l.dir, "conf.d", "a.conf")); got != "a1" {
		t.Errorf("conf.d/a.conf = %q, want a1", got)
	}
	st, err := os.Stat(filepath.Join(l.dir, "secret.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("secret.key mode = %v (%v), want 0600", st.Mode().Perm(), err)
	}
	if tgt, _ := os.Readlink(filepath.Join(l.dir, "app.conf")); tgt != "..data/app.conf" {
		t.Errorf("app.conf -> %q, want ..data/app.conf", tgt)
	}
	first, _ := l.live(l.root)

	v2 := snap("app.conf", "v=2\n", "conf.d/a.conf", "a2", "new.conf", "n")
	apply(t, l, v2)
	if got := readFile(t, filepath.Join(l.dir, "app.conf")); got != "v=2\n" {
		t.Errorf("app.conf = %q, want v=2", got)
	}
	if _, err := os.Lstat(filepath.Join(l.dir, "old.conf")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old.conf still there after it left the version: %v", err)
	}
	if _, err := os.Stat(filepath.Join(l.dir, first)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old version dir %s not removed", first)
	}
	got, linksOK, err := l.read()
	if err != nil || !linksOK || got.Hash() != v2.Hash() {
		t.Errorf("read() = hash match %v, linksOK %v, err %v; want the live v2", got != nil && got.Hash() == v2.Hash(), linksOK, err)
	}
}

func TestSwapTakesOverRegularFileButRefusesForeignEntries(t *testing.T) {
	l := newLayout(t)
	if err := os.WriteFile(filepath.Join(l.dir, "app.conf"), []byte("default"), 0o644); err != nil {
		t.Fatal(err)
	}
	apply(t, l, snap("app.conf", "managed"))
	if got := readFile(t, filepath.Join(l.dir, "app.conf")); got != "managed" {
		t.Errorf("app.conf = %q, want managed", got)
	}

	outside := t.TempDir()
	os.Symlink(outside, filepath.Join(l.dir, "etc"))
	os.Mkdir(filepath.Join(l.dir, "realdir"), 0o755)
	for _, s := range []*Snapshot{snap("etc/passwd", "x"), snap("realdir", "x"), snap("ok", "1", "etc", "x")} {
		if err := l.check(s); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("check(%v) = %v, want ErrUnsafePath", s.names(), err)
		}
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("something was written through the foreign symlink: %v", entries)
	}
}

func TestInitRemovesLeftovers(t *testing.T) {
	l := newLayout(t)
	apply(t, l, snap("app.conf", "1"))
	live, _ := l.live(l.root)
	// What a kill mid-apply leaves behind: a staged version, the temporary
	// links, and the link of a name that version brings.
	staged, err := l.stage(l.root, snap("app.conf", "2", "new.conf", "n"))
	if err != nil {
		t.Fatal(err)
	}
	os.Symlink(staged, filepath.Join(l.dir, dataTmpName))
	os.Symlink("..data/x", filepath.Join(l.dir, linkTmpPfx+"x"))
	os.Symlink("..data/new.conf", filepath.Join(l.dir, "new.conf"))
	if err := l.init(); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(l.dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := strings.Join([]string{live, dataName, "app.conf"}, ",")
	if got := strings.Join(names, ","); got != want {
		t.Errorf("after init dir holds %s, want %s", got, want)
	}
	if got := readFile(t, filepath.Join(l.dir, "app.conf")); got != "1" {
		t.Errorf("app.conf = %q, want the live version 1", got)
	}
}

func TestReadReportsReplacedLink(t *testing.T) {
	l := newLayout(t)
	apply(t, l, snap("app.conf", "1"))
	os.Remove(filepath.Join(l.dir, "app.conf"))
	os.WriteFile(filepath.Join(l.dir, "app.conf"), []byte("hand edit"), 0o644)
	_, linksOK, err := l.read()
	if err != nil || linksOK {
		t.Errorf("read() linksOK = %v, err = %v; want false, nil", linksOK, err)
	}
}
