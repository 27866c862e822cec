//go:build unix

package configsync

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// dirFD is an open directory under which every operation resolves its
// relative, slash-separated path without following any symlink: the app
// sharing Config.Dir can plant a symlink at any name at any instant, and
// configsync must never read, write, rename or remove through one it did not
// create (consul-template's writeToFile fix in 0.42 closed the same hole).
// Parents are opened with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS) where
// the kernel has it, else one component at a time with O_NOFOLLOW; the last
// component is acted on by the *at call itself (AT_SYMLINK_NOFOLLOW,
// O_NOFOLLOW, or calls such as renameat and unlinkat that never follow it).
// A symlink in the way fails the operation with [ErrUnsafePath].
//
// The symlinks configsync makes itself (..data and the per-name links) are
// read with readlink and their targets resolved by name, never followed.
type dirFD struct {
	fd   int
	name string // for messages
}

// openDirFD opens the directory p. p itself is the operator's path and is
// followed; everything below it is not.
func openDirFD(p string) (*dirFD, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	return &dirFD{fd: fd, name: p}, nil
}

func (d *dirFD) close() error { return unix.Close(d.fd) }

// errNoFollow turns the kernel's answer to a symlink in the way into
// ErrUnsafePath, naming the path.
func (d *dirFD) err(op, rel string, err error) error {
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
		return fmt.Errorf("%w: %s %q in %s: a symlink configsync did not create is in the way", ErrUnsafePath, op, rel, d.name)
	}
	return &fs.PathError{Op: op, Path: path.Join(d.name, rel), Err: err}
}

// checkRel refuses paths that are not plain relative names: every caller
// passes names that passed CheckPath or names of its own, so this is a guard.
func checkRel(rel string) error {
	if rel == "" || strings.HasPrefix(rel, "/") || path.Clean(rel) != rel {
		return fmt.Errorf("%w: %q is not a clean relative path", ErrUnsafePath, rel)
	}
	for _, el := range strings.Split(rel, "/") {
		if el == ".." {
			return fmt.Errorf("%w: %q leaves the directory", ErrUnsafePath, rel)
		}
	}
	return nil
}

// parent opens the directory holding rel and returns its fd (d's own for a
// top-level name), the last element, and a func that closes what was opened.
func (d *dirFD) parent(rel string) (int, string, func(), error) {
	if err := checkRel(rel); err != nil {
		return -1, "", nil, err
	}
	dir, base := path.Split(rel)
	if dir == "" {
		return d.fd, base, func() {}, nil
	}
	fd, err := openBeneath(d.fd, strings.TrimSuffix(dir, "/"), unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return -1, "", nil, d.err("open", dir, err)
	}
	return fd, base, func() { unix.Close(fd) }, nil
}

// sub opens the directory rel below d.
func (d *dirFD) sub(rel string) (*dirFD, error) {
	if rel == "." {
		fd, err := unix.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, d.err("open", rel, err)
		}
		return &dirFD{fd: fd, name: d.name}, nil
	}
	if err := checkRel(rel); err != nil {
		return nil, err
	}
	fd, err := openBeneath(d.fd, rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if errors.Is(err, unix.ENOTDIR) {
		// O_DIRECTORY|O_NOFOLLOW on a symlink says ENOTDIR: say what it is.
		if m, lerr := d.lstat(rel); lerr == nil && m&fs.ModeSymlink != 0 {
			err = unix.ELOOP
		}
	}
	if err != nil {
		return nil, d.err("open", rel, err)
	}
	return &dirFD{fd: fd, name: path.Join(d.name, rel)}, nil
}

// lstat returns the type and permission bits of rel itself.
func (d *dirFD) lstat(rel string) (fs.FileMode, error) {
	pfd, base, done, err := d.parent(rel)
	if err != nil {
		return 0, err
	}
	defer done()
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return 0, d.err("lstat", rel, err)
	}
	return modeOf(&st), nil
}

func modeOf(st *unix.Stat_t) fs.FileMode {
	m := fs.FileMode(st.Mode & 0o777)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFDIR:
		m |= fs.ModeDir
	case unix.S_IFLNK:
		m |= fs.ModeSymlink
	case unix.S_IFIFO:
		m |= fs.ModeNamedPipe
	case unix.S_IFSOCK:
		m |= fs.ModeSocket
	default:
		m |= fs.ModeDevice
	}
	return m
}

// readlink returns the target of the symlink rel.
func (d *dirFD) readlink(rel string) (string, error) {
	pfd, base, done, err := d.parent(rel)
	if err != nil {
		return "", err
	}
	defer done()
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(pfd, base, buf)
		if err != nil {
			return "", d.err("readlink", rel, err)
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		if len(buf) >= 4096 {
			return "", d.err("readlink", rel, unix.ENAMETOOLONG)
		}
		buf = make([]byte, 2*len(buf))
	}
}

// symlink creates rel pointing at target; it fails when rel exists.
func (d *dirFD) symlink(target, rel string) error {
	pfd, base, done, err := d.parent(rel)
	if err != nil {
		return err
	}
	defer done()
	if err := unix.Symlinkat(target, pfd, base); err != nil {
		return d.err("symlink", rel, err)
	}
	return nil
}

// rename moves the entry from onto to (replacing to), both below d.
// rename(2) acts on the entries themselves, never on what a symlink names.
func (d *dirFD) rename(from, to string) error {
	ffd, fbase, fdone, err := d.parent(from)
	if err != nil {
		return err
	}
	defer fdone()
	tfd, tbase, tdone, err := d.parent(to)
	if err != nil {
		return err
	}
	defer tdone()
	if err := unix.Renameat(ffd, fbase, tfd, tbase); err != nil {
		return d.err("rename", from+" to "+to, err)
	}
	return nil
}

// remove removes the file, symlink or empty directory rel; a missing rel is
// not an error.
func (d *dirFD) remove(rel string) error {
	pfd, base, done, err := d.parent(rel)
	if err != nil {
		return err
	}
	defer done()
	err = unix.Unlinkat(pfd, base, 0)
	if errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EPERM) {
		err = unix.Unlinkat(pfd, base, unix.AT_REMOVEDIR)
	}
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return d.err("remove", rel, err)
	}
	return nil
}

// removeAll removes rel and, when it is a directory, everything below it,
// without following any symlink: a symlink found inside is removed itself.
func (d *dirFD) removeAll(rel string) error { return d.removeAllDepth(rel, 0) }

func (d *dirFD) removeAllDepth(rel string, depth int) error {
	m, err := d.lstat(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if m.IsDir() {
		if depth > 64 {
			return d.err("remove", rel, unix.ELOOP)
		}
		sub, err := d.sub(rel)
		if err != nil {
			return err
		}
		entries, err := sub.readDir()
		if err == nil {
			for _, e := range entries {
				if err = sub.removeAllDepth(e.Name(), depth+1); err != nil {
					break
				}
			}
		}
		sub.close()
		if err != nil {
			return err
		}
	}
	return d.remove(rel)
}

// mkdir creates the directory rel with mode (the umask does not apply).
func (d *dirFD) mkdir(rel string, mode fs.FileMode) error {
	pfd, base, done, err := d.parent(rel)
	if err != nil {
		return err
	}
	defer done()
	if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
		return d.err("mkdir", rel, err)
	}
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return d.err("open", rel, err)
	}
	defer unix.Close(fd)
	if err := unix.Fchmod(fd, uint32(mode.Perm())); err != nil {
		return d.err("chmod", rel, err)
	}
	return nil
}

// createFile creates rel, which must not exist, with mode set before any
// data is written, writes data and fsyncs it.
func (d *dirFD) createFile(rel string, data []byte, mode fs.FileMode) error {
	pfd, base, done, err := d.parent(rel)
	if err != nil {
		return err
	}
	defer done()
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return d.err("create", rel, err)
	}
	f := os.NewFile(uintptr(fd), path.Join(d.name, rel))
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

// readFile reads the regular file rel (a symlink or anything else is an
// error) and returns its content and permission bits. A file larger than
// limit is an error.
func (d *dirFD) readFile(rel string, limit int64) ([]byte, fs.FileMode, error) {
	pfd, base, done, err := d.parent(rel)
	if err != nil {
		return nil, 0, err
	}
	defer done()
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, d.err("open", rel, err)
	}
	f := os.NewFile(uintptr(fd), path.Join(d.name, rel))
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("%w: %q in %s is not a regular file", ErrUnsafePath, rel, d.name)
	}
	if st.Size() > limit {
		return nil, 0, fmt.Errorf("%w: %q is larger than %d bytes", ErrInvalidBundle, rel, limit)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, 0, err
	}
	if int64(len(data)) > limit {
		return nil, 0, fmt.Errorf("%w: %q is larger than %d bytes", ErrInvalidBundle, rel, limit)
	}
	return data, st.Mode().Perm(), nil
}

// readDir lists d's entries sorted by name, with their types as lstat sees
// them.
func (d *dirFD) readDir() ([]fs.DirEntry, error) {
	fd, err := unix.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, d.err("open", ".", err)
	}
	f := os.NewFile(uintptr(fd), d.name)
	defer f.Close()
	entries, err := f.ReadDir(-1)
	if err != nil {
		return nil, err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	return entries, nil
}

// sync fsyncs the directory d, so the entries made in it are durable.
func (d *dirFD) sync() error {
	if err := unix.Fsync(d.fd); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("syncing %s: %w", d.name, err)
	}
	return nil
}

// openBeneathWalk opens rel below dirfd one element at a time, each with
// O_NOFOLLOW: the portable equivalent of RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS
// for paths without "." or ".." elements (checkRel guarantees that).
func openBeneathWalk(dirfd int, rel string, flags int) (int, error) {
	parts := strings.Split(rel, "/")
	cur := dirfd
	for i, p := range parts {
		fl := unix.O_RDONLY | unix.O_DIRECTORY
		if i == len(parts)-1 {
			fl = flags
		}
		fd, err := unix.Openat(cur, p, fl|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if cur != dirfd {
			unix.Close(cur)
		}
		if err != nil {
			return -1, err
		}
		cur = fd
	}
	return cur, nil
}
