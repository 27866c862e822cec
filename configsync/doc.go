// Package configsync keeps an application's config directory in sync with a
// config source (an HTTP API, a mounted directory; etcd plugs in through
// [Source]) and does the whole change as one transaction: fetch, check the
// bundle, stage the files, run a validate command on the staged copy, make
// every file live in one atomic step, notify the app, verify its health, and
// roll back to the previous version when the app does not come back healthy.
//
// Files in Config.Dir are laid out as the kubelet lays out a ConfigMap volume:
//
//	dir/..2026_01_02_15_04_05.123456789/app.conf   one directory per version
//	dir/..data -> ..2026_01_02_15_04_05.123456789   swapped with one rename(2)
//	dir/app.conf -> ..data/app.conf                  what the app opens
//
// so a reader sees either the old or the new version of every file, never a
// torn file nor a mix, even when the process is killed mid-apply. Every
// caller — sync, restore, drift repair, rollback — goes through one apply
// path (check, stage, validate, swap, clean up), and a failed apply leaves
// Dir as it was. The app sharing Dir is not trusted: configsync never
// follows a symlink in Dir that it did not make (openat2 with
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, O_NOFOLLOW), so a planted one cannot
// make it write, remove or read anything outside. The last
// Config.KeepVersions versions that passed every check are kept in
// Config.StateDir: the newest is put back at start, before the source is
// contacted, and rollback goes back through them until the app is healthy.
//
// The package opens no listeners: [Syncer.Status] and [Syncer.Ready] are for
// the caller's admin server, and metrics go to Config.Registerer.
package configsync
