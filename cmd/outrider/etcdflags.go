package main

import (
	"time"

	"github.com/outrider-dev/outrider/internal/etcdclient"
)

// etcdFlagNames are the etcd client flags shared by --storage etcd://… and
// --source etcd://… (and, in `outrider proxy`, by both at once).
var etcdFlagNames = struct{ caFile, certFile, keyFile, username, passwordFile string }{
	"etcd-ca-file", "etcd-cert-file", "etcd-key-file", "etcd-username", "etcd-password-file",
}

// addEtcdFlags registers the etcd client flags on fs unless they are there
// already (cert flags and configsync flags may share one flag set), and
// returns a func giving their values after parsing.
func addEtcdFlags(fs *flagSet) func() etcdclient.Options {
	fs.share(etcdFlagNames.caFile, etcdFlagNames.certFile, etcdFlagNames.keyFile, etcdFlagNames.username, etcdFlagNames.passwordFile)
	if fs.Lookup(etcdFlagNames.caFile) == nil {
		fs.String(etcdFlagNames.caFile, "", "PEM `file` of roots for the etcd members' certificates; turns TLS on for etcd://")
		fs.String(etcdFlagNames.certFile, "", "PEM client certificate `file` for etcd (with --etcd-key-file); turns TLS on")
		fs.String(etcdFlagNames.keyFile, "", "PEM client key `file` for --etcd-cert-file")
		fs.String(etcdFlagNames.username, "", "etcd user `name` (with --etcd-password-file)")
		fs.String(etcdFlagNames.passwordFile, "", "`file` holding the etcd user's password")
	}
	return func() etcdclient.Options {
		get := func(name string) string { return fs.Lookup(name).Value.String() }
		return etcdclient.Options{
			CAFile:       get(etcdFlagNames.caFile),
			CertFile:     get(etcdFlagNames.certFile),
			KeyFile:      get(etcdFlagNames.keyFile),
			Username:     get(etcdFlagNames.username),
			PasswordFile: get(etcdFlagNames.passwordFile),
		}
	}
}

// addEtcdLockTTLFlag registers --etcd-lock-ttl, the lease of the
// certificate storage's locks (only --storage etcd://… takes locks).
func addEtcdLockTTLFlag(fs *flagSet) *time.Duration {
	fs.share("etcd-lock-ttl")
	return durationFlag(fs, "etcd-lock-ttl", 15*time.Second,
		"with --storage etcd://…: lease of a held lock; a replica that dies mid-order frees it after this long")
}
