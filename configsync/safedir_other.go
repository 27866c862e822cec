//go:build unix && !linux

package configsync

// openBeneath opens rel below dirfd without following any symlink.
func openBeneath(dirfd int, rel string, flags int) (int, error) {
	return openBeneathWalk(dirfd, rel, flags)
}
