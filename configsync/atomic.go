package configsync

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// The kubelet's atomic-writer layout (pkg/volume/util/atomic_writer.go):
// every version lives in its own hidden directory, ..data points at the live
// one, and each top-level name is a symlink through ..data. Swapping ..data is
// one rename(2), so all files change together.
const (
	dataName    = "..data"
	dataTmpName = "..data_tmp"
	linkTmpPfx  = "..link_"
)

// layout manages the versioned directory tree under dir. It is not safe for
// concurrent use; the Syncer's loop owns it.
type layout struct {
	dir string
	now func() time.Time
}

// init creates dir if needed and removes what an interrupted run left:
// temporary links and every version directory that ..data does not point at.
func (l *layout) init() error {
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return fmt.Errorf("configsync: creating dir: %w", err)
	}
	return l.cleanup()
}

// live returns the version directory ..data points at, or "" when none.
func (l *layout) live() (string, error) {
	t, err := os.Readlink(filepath.Join(l.dir, dataName))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("configsync: reading %s: %w", dataName, err)
	}
	if strings.Contains(t, "/") || !strings.HasPrefix(t, "..") {
		return "", fmt.Errorf("configsync: %s points at %q, not a version directory", dataName, t)
	}
	return t, nil
}

func (l *layout) cleanup() error {
	live, err := l.live()
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("configsync: reading dir: %w", err)
	}
	var errs []error
	for _, e := range entries {
		n := e.Name()
		if !strings.HasPrefix(n, "..") || n == dataName || n == live {
			continue
		}
		if n == dataTmpName || strings.HasPrefix(n, linkTmpPfx) || (e.IsDir() && isVersionName(n)) {
			if err := os.RemoveAll(filepath.Join(l.dir, n)); err != nil {
				errs = append(errs, fmt.Errorf("configsync: removing leftover %s: %w", n, err))
			}
		}
	}
	return errors.Join(errs...)
}

// isVersionName reports whether n looks like a directory made by stage.
func isVersionName(n string) bool {
	return len(n) > 3 && n[:2] == ".." && n[2] >= '0' && n[2] <= '9'
}

// stage writes snap into a new hidden version directory inside dir — modes
// set, files and directories fsynced — and returns its name. Nothing is
// visible to the app until swap.
func (l *layout) stage(snap *Snapshot) (name string, err error) {
	if err := snap.check(); err != nil {
		return "", err
	}
	abs, err := os.MkdirTemp(l.dir, ".."+l.now().UTC().Format("2006_01_02_15_04_05.000000000")+".")
	if err != nil {
		return "", fmt.Errorf("configsync: creating version directory: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(abs)
		}
	}()
	if err := os.Chmod(abs, 0o755); err != nil {
		return "", fmt.Errorf("configsync: staging: %w", err)
	}
	dirs := map[string]bool{abs: true}
	for _, n := range snap.names() {
		f := snap.Files[n]
		p := filepath.Join(abs, filepath.FromSlash(n))
		for d := filepath.Dir(p); d != abs && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", fmt.Errorf("configsync: staging %q: %w", n, err)
		}
		if err := writeFileSync(p, f.Data, f.Mode); err != nil {
			return "", fmt.Errorf("configsync: staging %q: %w", n, err)
		}
	}
	// Deepest first, so each directory's entry is durable in its parent.
	all := make([]string, 0, len(dirs))
	for d := range dirs {
		all = append(all, d)
	}
	sort.Slice(all, func(i, j int) bool { return len(all[i]) > len(all[j]) })
	for _, d := range all {
		if err := syncDir(d); err != nil {
			return "", fmt.Errorf("configsync: staging: %w", err)
		}
	}
	if err := syncDir(l.dir); err != nil {
		return "", fmt.Errorf("configsync: staging: %w", err)
	}
	return filepath.Base(abs), nil
}

// discard removes a staged version that will not go live.
func (l *layout) discard(name string) {
	if name != "" {
		os.RemoveAll(filepath.Join(l.dir, name))
	}
}

// checkTargets refuses, before anything changes, a version whose top-level
// names collide with entries of dir that configsync does not manage: a
// directory, or a symlink pointing anywhere but ..data (it could lead out of
// dir). A regular file is taken over: replaced by our symlink.
func (l *layout) checkTargets(snap *Snapshot) error {
	var errs []error
	for _, top := range topNames(snap) {
		p := filepath.Join(l.dir, top)
		st, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("configsync: checking %q: %w", top, err))
			continue
		}
		switch {
		case st.Mode()&fs.ModeSymlink != 0:
			if t, _ := os.Readlink(p); t != path.Join(dataName, top) {
				errs = append(errs, fmt.Errorf("%w: %q: dir already holds a symlink to %q that configsync does not manage", ErrUnsafePath, top, t))
			}
		case st.IsDir():
			errs = append(errs, fmt.Errorf("%w: %q: dir already holds a directory of that name that configsync does not manage", ErrUnsafePath, top))
		}
	}
	return errors.Join(errs...)
}

// swap makes the staged version live in one rename of ..data, adds the
// per-name symlinks (new names before the swap, so they appear with it;
// taken-over regular files right after), removes symlinks of names the new
// version no longer has, and deletes the old version directory.
// live reports whether the new version went live; err may be non-nil with
// live true when only the tidying up after the swap failed.
func (l *layout) swap(staged string, snap *Snapshot) (live bool, err error) {
	old, err := l.live()
	if err != nil {
		return false, err
	}
	tops := topNames(snap)
	var takeOver []string
	for _, top := range tops {
		st, err := os.Lstat(filepath.Join(l.dir, top))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := l.link(top); err != nil {
				return false, err
			}
		case err != nil:
			return false, fmt.Errorf("configsync: checking %q: %w", top, err)
		case st.Mode().IsRegular():
			takeOver = append(takeOver, top)
		}
	}
	tmp := filepath.Join(l.dir, dataTmpName)
	os.Remove(tmp)
	if err := os.Symlink(staged, tmp); err != nil {
		return false, fmt.Errorf("configsync: swapping: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(l.dir, dataName)); err != nil {
		os.Remove(tmp)
		return false, fmt.Errorf("configsync: swapping: %w", err)
	}
	var errs []error
	if err := syncDir(l.dir); err != nil {
		errs = append(errs, fmt.Errorf("configsync: swapping: %w", err))
	}
	// The new version is live. What follows only tidies up; a crash here is
	// repaired by the next start.
	for _, top := range takeOver {
		if err := l.link(top); err != nil {
			errs = append(errs, err)
		}
	}
	if err := l.unlinkStale(tops); err != nil {
		errs = append(errs, err)
	}
	if err := syncDir(l.dir); err != nil {
		errs = append(errs, err)
	}
	if old != "" && old != staged {
		if err := os.RemoveAll(filepath.Join(l.dir, old)); err != nil {
			errs = append(errs, fmt.Errorf("configsync: removing old version: %w", err))
		}
	}
	return true, errors.Join(errs...)
}

// link points dir/top at ..data/top, replacing what is there atomically.
func (l *layout) link(top string) error {
	tmp := filepath.Join(l.dir, linkTmpPfx+top)
	os.Remove(tmp)
	if err := os.Symlink(path.Join(dataName, top), tmp); err != nil {
		return fmt.Errorf("configsync: linking %q: %w", top, err)
	}
	if err := os.Rename(tmp, filepath.Join(l.dir, top)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("configsync: linking %q: %w", top, err)
	}
	return nil
}

// unlinkStale removes our symlinks whose names are not in keep.
func (l *layout) unlinkStale(keep []string) error {
	want := make(map[string]bool, len(keep))
	for _, k := range keep {
		want[k] = true
	}
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("configsync: reading dir: %w", err)
	}
	var errs []error
	for _, e := range entries {
		n := e.Name()
		if want[n] || strings.HasPrefix(n, "..") || e.Type()&fs.ModeSymlink == 0 {
			continue
		}
		if t, _ := os.Readlink(filepath.Join(l.dir, n)); t == path.Join(dataName, n) {
			if err := os.Remove(filepath.Join(l.dir, n)); err != nil {
				errs = append(errs, fmt.Errorf("configsync: removing %q: %w", n, err))
			}
		}
	}
	return errors.Join(errs...)
}

// read returns the live version as the app sees it, and whether every
// top-level name is our symlink (false means someone replaced one). It
// returns nil, true, nil when nothing is live.
func (l *layout) read() (*Snapshot, bool, error) {
	live, err := l.live()
	if err != nil || live == "" {
		return nil, true, err
	}
	src := &dirSource{root: l.dir}
	snap, err := src.readTree(filepath.Join(l.dir, live), filepath.Join(l.dir, live))
	if errors.Is(err, ErrEmpty) {
		return &Snapshot{Files: map[string]File{}}, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	linksOK := true
	for _, top := range topNames(snap) {
		if t, err := os.Readlink(filepath.Join(l.dir, top)); err != nil || t != path.Join(dataName, top) {
			linksOK = false
		}
	}
	return snap, linksOK, nil
}

// topNames returns the distinct first path elements of snap's files.
func topNames(snap *Snapshot) []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range snap.names() {
		top, _, _ := strings.Cut(n, "/")
		if !seen[top] {
			seen[top] = true
			out = append(out, top)
		}
	}
	return out
}

// writeFileSync creates p (which must not exist) with mode, writes data and
// fsyncs it. The mode is set explicitly so the umask does not change it.
func writeFileSync(p string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode.Perm())
	if err != nil {
		return err
	}
	if err := f.Chmod(mode.Perm()); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// writeFileAtomic replaces p with data: temp file in the same directory,
// fsync, rename, fsync of the directory.
func writeFileAtomic(p string, data []byte, mode fs.FileMode) error {
	dir := filepath.Dir(p)
	f, err := os.CreateTemp(dir, "."+filepath.Base(p)+".tmp-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	ok = true
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
