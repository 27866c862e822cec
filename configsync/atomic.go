package configsync

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The kubelet's atomic-writer layout (pkg/volume/util/atomic_writer.go):
// every version lives in its own hidden directory, ..data points at the live
// one, and each top-level name is a symlink through ..data. Swapping ..data is
// one rename(2), so all files change together.
const (
	dataName = "..data"
	// Temporary links get a random suffix (an app cannot aim at a name it
	// cannot guess before it exists) and are short, so that a top-level
	// name of up to 255 bytes still fits while its link is made.
	dataTmpName = "..data_tmp"
	linkTmpPfx  = "..link_"
)

// tmpName returns prefix and a random suffix.
func tmpName(prefix string) string {
	return prefix + "." + strconv.FormatUint(rand.Uint64(), 36)
}

// layout manages the versioned directory tree under dir. Every operation in
// dir goes through a [dirFD] opened once, so none follows a symlink that
// configsync did not make (the app sharing dir may plant one anywhere, at any
// moment). It is not safe for concurrent use; the Syncer's loop owns it.
type layout struct {
	dir  string
	now  func() time.Time
	root *dirFD // nil until open
}

// refusedError marks a version refused by the checks that run before
// anything is written: the version's fault, not the disk's.
type refusedError struct{ err error }

func (e *refusedError) Error() string { return e.err.Error() }
func (e *refusedError) Unwrap() error { return e.err }

// open returns dir opened as a dirFD, opening it on first use.
func (l *layout) open() (*dirFD, error) {
	if l.root != nil {
		return l.root, nil
	}
	d, err := openDirFD(l.dir)
	if err != nil {
		return nil, fmt.Errorf("configsync: opening dir: %w", err)
	}
	l.root = d
	return d, nil
}

// close releases dir; the next operation opens it again.
func (l *layout) close() {
	if l.root != nil {
		l.root.close()
		l.root = nil
	}
}

// init creates dir if needed and removes what an interrupted run left:
// temporary links, every version directory that ..data does not point at,
// and links to names the live version does not have.
func (l *layout) init() error {
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return fmt.Errorf("configsync: creating dir: %w", err)
	}
	root, err := l.open()
	if err != nil {
		return err
	}
	return l.cleanup(root)
}

// live returns the version directory ..data points at, or "" when none. Its
// target is read, never followed, and must be a version directory's name.
func (l *layout) live(root *dirFD) (string, error) {
	t, err := root.readlink(dataName)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("configsync: reading %s (it must be configsync's symlink): %w", dataName, err)
	}
	if !isVersionName(t) {
		return "", fmt.Errorf("%w: %s points at %q, not a version directory", ErrUnsafePath, dataName, t)
	}
	return t, nil
}

func (l *layout) cleanup(root *dirFD) error {
	live, err := l.live(root)
	if err != nil {
		// ..data is not ours: keep every version directory (one of them may
		// still be what the app reads) until the next apply replaces it.
		return nil
	}
	entries, err := root.readDir()
	if err != nil {
		return fmt.Errorf("configsync: reading dir: %w", err)
	}
	var errs []error
	for _, e := range entries {
		n := e.Name()
		if !strings.HasPrefix(n, "..") || n == dataName || n == live {
			continue
		}
		if strings.HasPrefix(n, dataTmpName) || strings.HasPrefix(n, linkTmpPfx) || (e.IsDir() && isVersionName(n)) {
			if err := root.removeAll(n); err != nil {
				errs = append(errs, fmt.Errorf("configsync: removing leftover %s: %w", n, err))
			}
		}
	}
	// Links made for a version that never went live dangle: remove them.
	var keep []string
	if live != "" {
		ver, err := root.sub(live)
		if err != nil {
			// ..data leads nowhere configsync made: as above.
			return errors.Join(errs...)
		}
		names, err := ver.readDir()
		ver.close()
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		for _, e := range names {
			keep = append(keep, e.Name())
		}
	}
	if err := l.unlinkStale(root, keep); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// isVersionName reports whether n looks like a directory made by stage.
func isVersionName(n string) bool {
	return len(n) > 3 && n[:2] == ".." && n[2] >= '0' && n[2] <= '9' && !strings.Contains(n, "/")
}

// apply is the one way a version goes live: sync, restore from state, drift
// repair and rollback all come through here, in the order of the kubelet's
// AtomicWriter.Write — check, stage, validate, swap, clean up. validate, when
// not nil, runs on the staged copy's path and its error refuses the version.
// live reports whether snap went live; err may be non-nil with live true when
// only the tidying up after the swap failed. When live is false, dir holds
// what it held before the call, nothing more (a refusal by the checks wraps
// *refusedError).
func (l *layout) apply(snap *Snapshot, validate func(staged string) error) (live bool, err error) {
	root, err := l.open()
	if err != nil {
		return false, err
	}
	if err := l.check(snap); err != nil {
		return false, &refusedError{err}
	}
	staged, err := l.stage(root, snap)
	if err != nil {
		return false, err
	}
	if validate != nil {
		if err := validate(filepath.Join(l.dir, staged)); err != nil {
			root.removeAll(staged)
			return false, err
		}
	}
	live, err = l.swap(root, staged, snap)
	if !live {
		root.removeAll(staged)
	}
	return live, err
}

// check runs the checks apply starts with, and changes nothing.
func (l *layout) check(snap *Snapshot) error {
	if err := snap.check(); err != nil {
		return err
	}
	root, err := l.open()
	if errors.Is(err, fs.ErrNotExist) {
		return nil // nothing there to collide with
	}
	if err != nil {
		return err
	}
	return l.checkTargets(root, snap)
}

// stage writes snap into a new hidden version directory inside dir — modes
// set before the data, files and directories fsynced — and returns its name.
// Nothing is visible to the app until swap. The directory is new and every
// entry in it is created exclusively, so an entry the app races in (a
// symlink, say) fails the stage instead of being written through.
func (l *layout) stage(root *dirFD, snap *Snapshot) (string, error) {
	var name string
	for i := 0; ; i++ {
		name = ".." + l.now().UTC().Format("2006_01_02_15_04_05.000000000") + "." + strconv.FormatUint(uint64(rand.Uint32()), 10)
		err := root.mkdir(name, 0o755)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) || i >= 10 {
			return "", fmt.Errorf("configsync: creating version directory: %w", err)
		}
	}
	if err := l.fill(root, name, snap); err != nil {
		root.removeAll(name)
		return "", err
	}
	return name, nil
}

// fill writes snap into the new version directory name and fsyncs it.
func (l *layout) fill(root *dirFD, name string, snap *Snapshot) error {
	ver, err := root.sub(name)
	if err != nil {
		return fmt.Errorf("configsync: staging: %w", err)
	}
	defer ver.close()
	dirs := map[string]bool{}
	for _, n := range snap.names() {
		f := snap.Files[n]
		var parents []string
		for d := path.Dir(n); d != "." && !dirs[d]; d = path.Dir(d) {
			parents = append(parents, d)
		}
		for i := len(parents) - 1; i >= 0; i-- {
			if err := ver.mkdir(parents[i], 0o755); err != nil {
				return fmt.Errorf("configsync: staging %q: %w", n, err)
			}
			dirs[parents[i]] = true
		}
		if err := ver.createFile(n, f.Data, f.Mode); err != nil {
			return fmt.Errorf("configsync: staging %q: %w", n, err)
		}
	}
	// Deepest first, so each directory's entry is durable in its parent.
	all := make([]string, 0, len(dirs))
	for d := range dirs {
		all = append(all, d)
	}
	sort.Slice(all, func(i, j int) bool { return len(all[i]) > len(all[j]) })
	for _, d := range all {
		sd, err := ver.sub(d)
		if err != nil {
			return fmt.Errorf("configsync: staging: %w", err)
		}
		err = sd.sync()
		sd.close()
		if err != nil {
			return fmt.Errorf("configsync: staging: %w", err)
		}
	}
	if err := errors.Join(ver.sync(), root.sync()); err != nil {
		return fmt.Errorf("configsync: staging: %w", err)
	}
	return nil
}

// checkTargets refuses, before anything changes, a version whose top-level
// names collide with entries of dir that configsync does not manage: a
// directory, a symlink pointing anywhere but ..data/NAME (it could lead out
// of dir), a FIFO or device. A regular file is taken over: replaced by our
// symlink. A missing dir has no collisions.
func (l *layout) checkTargets(root *dirFD, snap *Snapshot) error {
	var errs []error
	for _, top := range topNames(snap) {
		m, err := root.lstat(top)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("configsync: checking %q: %w", top, err))
			continue
		}
		switch {
		case m.IsRegular():
		case m&fs.ModeSymlink != 0:
			if t, _ := root.readlink(top); t != path.Join(dataName, top) {
				errs = append(errs, fmt.Errorf("%w: %q: dir already holds a symlink to %q that configsync does not manage", ErrUnsafePath, top, t))
			}
		case m.IsDir():
			errs = append(errs, fmt.Errorf("%w: %q: dir already holds a directory of that name that configsync does not manage", ErrUnsafePath, top))
		default:
			errs = append(errs, fmt.Errorf("%w: %q: dir already holds a %v of that name that configsync does not manage", ErrUnsafePath, top, m.Type()))
		}
	}
	return errors.Join(errs...)
}

// ours reports whether name in dir is the symlink configsync makes for it.
func ours(root *dirFD, name string) bool {
	t, err := root.readlink(name)
	return err == nil && t == path.Join(dataName, name)
}

// swap makes the staged version live in one rename of ..data. New names get
// their symlinks first, so they appear with the swap; regular files taken
// over are replaced right after it; then symlinks of names the version no
// longer has, and the old version directory, are removed. Until the rename
// every step is undone on failure, so dir is left exactly as it was.
// live reports whether the new version went live; err may be non-nil with
// live true when only the tidying up after the swap failed.
func (l *layout) swap(root *dirFD, staged string, snap *Snapshot) (live bool, err error) {
	old, err := l.live(root)
	if err != nil {
		// Something else sits at ..data: it is replaced below, not kept.
		old = ""
	}
	tops := topNames(snap)
	var created, takeOver []string
	tmp := tmpName(dataTmpName)
	tmpMade := false
	undo := func(err error) (bool, error) {
		for _, top := range created {
			if ours(root, top) {
				root.remove(top)
			}
		}
		if tmpMade {
			root.remove(tmp)
		}
		return false, err
	}
	for _, top := range tops {
		m, err := root.lstat(top)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// symlinkat fails if the app made the name meanwhile.
			if err := root.symlink(path.Join(dataName, top), top); err != nil {
				return undo(fmt.Errorf("configsync: linking %q: %w", top, err))
			}
			created = append(created, top)
		case err != nil:
			return undo(fmt.Errorf("configsync: checking %q: %w", top, err))
		case m.IsRegular():
			takeOver = append(takeOver, top)
		case m&fs.ModeSymlink != 0 && ours(root, top):
		default:
			return undo(fmt.Errorf("%w: %q was replaced while the version was staged", ErrUnsafePath, top))
		}
	}
	if m, err := root.lstat(dataName); err == nil && m.IsDir() {
		// A directory planted at ..data would make the rename fail forever.
		if err := root.removeAll(dataName); err != nil {
			return undo(fmt.Errorf("configsync: swapping: %w", err))
		}
	}
	if err := root.symlink(staged, tmp); err != nil {
		return undo(fmt.Errorf("configsync: swapping: %w", err))
	}
	tmpMade = true
	if err := root.rename(tmp, dataName); err != nil {
		return undo(fmt.Errorf("configsync: swapping: %w", err))
	}
	if t, err := root.readlink(dataName); err != nil || t != staged {
		// The app replaced the temporary link between its making and the
		// rename: what is live is not this version. Report it; the next
		// drift check or apply replaces ..data again.
		return false, fmt.Errorf("%w: %s was replaced during the swap", ErrUnsafePath, dataName)
	}
	var errs []error
	if err := root.sync(); err != nil {
		errs = append(errs, fmt.Errorf("configsync: swapping: %w", err))
	}
	// The new version is live. What follows only tidies up; a crash here is
	// repaired by the next start.
	for _, top := range takeOver {
		if err := l.link(root, top); err != nil {
			errs = append(errs, err)
		}
	}
	if err := l.unlinkStale(root, tops); err != nil {
		errs = append(errs, err)
	}
	if err := root.sync(); err != nil {
		errs = append(errs, err)
	}
	if old != "" && old != staged {
		if err := root.removeAll(old); err != nil {
			errs = append(errs, fmt.Errorf("configsync: removing old version: %w", err))
		}
	}
	return true, errors.Join(errs...)
}

// link points dir/top at ..data/top, replacing what is there atomically.
func (l *layout) link(root *dirFD, top string) error {
	tmp := tmpName(linkTmpPfx)
	if err := root.symlink(path.Join(dataName, top), tmp); err != nil {
		return fmt.Errorf("configsync: linking %q: %w", top, err)
	}
	if err := root.rename(tmp, top); err != nil {
		root.remove(tmp)
		return fmt.Errorf("configsync: linking %q: %w", top, err)
	}
	return nil
}

// unlinkStale removes our symlinks whose names are not in keep.
func (l *layout) unlinkStale(root *dirFD, keep []string) error {
	want := make(map[string]bool, len(keep))
	for _, k := range keep {
		want[k] = true
	}
	entries, err := root.readDir()
	if err != nil {
		return fmt.Errorf("configsync: reading dir: %w", err)
	}
	var errs []error
	for _, e := range entries {
		n := e.Name()
		if want[n] || strings.HasPrefix(n, "..") || e.Type()&fs.ModeSymlink == 0 {
			continue
		}
		if ours(root, n) {
			if err := root.remove(n); err != nil {
				errs = append(errs, fmt.Errorf("configsync: removing %q: %w", n, err))
			}
		}
	}
	return errors.Join(errs...)
}

// read returns the live version as the app sees it, and whether dir is
// intact: every top-level name our symlink, and nothing in the version
// directory but the directories and regular files configsync wrote (false
// means someone changed it). Nothing is followed: a symlink found inside the
// version directory makes it not intact and is not read. It returns nil,
// true, nil when nothing is live.
func (l *layout) read() (*Snapshot, bool, error) {
	root, err := l.open()
	if errors.Is(err, fs.ErrNotExist) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	live, err := l.live(root)
	if err != nil || live == "" {
		return nil, true, err
	}
	ver, err := root.sub(live)
	if err != nil {
		return nil, false, err
	}
	defer ver.close()
	snap := &Snapshot{Files: map[string]File{}}
	intact := true
	var walk func(d *dirFD, rel string, depth int) error
	walk = func(d *dirFD, rel string, depth int) error {
		if depth > 32 {
			return fmt.Errorf("%w: %q: directories nested too deep", ErrInvalidBundle, rel)
		}
		entries, err := d.readDir()
		if err != nil {
			return fmt.Errorf("configsync: reading the live version: %w", err)
		}
		for _, e := range entries {
			name := path.Join(rel, e.Name())
			switch {
			case CheckPath(name) != nil:
				intact = false
			case e.IsDir():
				sub, err := d.sub(e.Name())
				if err != nil {
					return err
				}
				err = walk(sub, name, depth+1)
				sub.close()
				if err != nil {
					return err
				}
			case e.Type().IsRegular():
				if len(snap.Files) >= maxFiles {
					return fmt.Errorf("%w: more than %d files", ErrInvalidBundle, maxFiles)
				}
				data, mode, err := d.readFile(e.Name(), maxBundleBytes)
				if errors.Is(err, ErrUnsafePath) {
					intact = false // replaced by a symlink since it was listed
					continue
				}
				if err != nil {
					return fmt.Errorf("configsync: reading the live version: %w", err)
				}
				snap.Files[name] = File{Data: data, Mode: mode}
			default:
				intact = false // a symlink, FIFO or device: not ours
			}
		}
		return nil
	}
	if err := walk(ver, "", 0); err != nil {
		return nil, false, err
	}
	if len(snap.Files) == 0 {
		return snap, false, nil
	}
	for _, top := range topNames(snap) {
		if !ours(root, top) {
			intact = false
		}
	}
	return snap, intact, nil
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

// writeFileAtomic replaces p with data: temp file in the same directory,
// fsync, rename, fsync of the directory. It is for --state-dir, which the
// app does not share.
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
