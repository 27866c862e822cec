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
// torn file nor a mix, even when the process is killed mid-apply. The last
// version that passed every check is kept in Config.StateDir and put back at
// start, before the source is contacted.
//
// The package opens no listeners: [Syncer.Status] and [Syncer.Ready] are for
// the caller's admin server, and metrics go to Config.Registerer.
package configsync
