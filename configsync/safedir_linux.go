package configsync

import (
	"errors"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// noOpenat2 is set once openat2 turned out to be missing (Linux < 5.6) or
// refused by a seccomp profile that predates it.
var noOpenat2 atomic.Bool

// openBeneath opens rel below dirfd with openat2 refusing every symlink and
// any escape from dirfd, falling back to a walk with O_NOFOLLOW.
func openBeneath(dirfd int, rel string, flags int) (int, error) {
	if !noOpenat2.Load() {
		fd, err := unix.Openat2(dirfd, rel, &unix.OpenHow{
			Flags:   uint64(flags | unix.O_NOFOLLOW | unix.O_CLOEXEC),
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EPERM) {
			return fd, err
		}
		noOpenat2.Store(true)
	}
	return openBeneathWalk(dirfd, rel, flags)
}
