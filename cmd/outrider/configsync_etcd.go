package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/outrider-dev/outrider/configsync"
)

// isConfigsyncEtcdHelper reports whether args start with an operator helper
// of `outrider configsync` for etcd sources (publish, rollback).
func isConfigsyncEtcdHelper(args []string) bool {
	return len(args) > 0 && (args[0] == "publish" || args[0] == "rollback")
}

// runConfigsyncEtcd runs `outrider configsync publish` and `outrider
// configsync rollback`. Each prints one JSON object on stdout:
// {"revision": N, "put": …, "deleted": …, "unchanged": …}.
func runConfigsyncEtcd(ctx context.Context, args []string, stdout, _ io.Writer) error {
	var fs *flagSet
	var dir *string
	var toRev *int64
	switch args[0] {
	case "publish":
		fs = newFlagSet("outrider configsync publish", "Publish the files of --dir as the keys under an etcd:// --source prefix, in one\n"+
			"transaction: changed and new files are written, keys without a file are deleted.\n"+
			"Every configsync watching the prefix applies the new revision.")
		dir = fs.String("dir", "", "local `dir` whose files become the keys (required)")
	default:
		fs = newFlagSet("outrider configsync rollback", "Publish the values an etcd:// --source prefix held at --to-revision as a new\n"+
			"revision (history moves forward; watchers apply it like any other version).")
		toRev = fs.Int64("to-revision", 0, "etcd `revision` to roll back to (the version shown in /status; required)")
	}
	source := fs.String("source", "", "etcd://host:2379[,host2:2379]/prefix (required)")
	etcdOpts := addEtcdFlags(fs)
	if err := parseFlags(fs, args[1:], stdout); err != nil {
		return err
	}
	if !strings.HasPrefix(*source, "etcd://") {
		return usageError{fmt.Errorf("--source %q: publish and rollback need an etcd://host:2379/prefix source", *source)}
	}
	var res configsync.PublishResult
	var err error
	if dir != nil {
		if *dir == "" {
			return usageError{errors.New("--dir is required")}
		}
		abs, aerr := filepath.Abs(*dir)
		if aerr != nil {
			return usageError{fmt.Errorf("--dir %q: %w", *dir, aerr)}
		}
		res, err = configsync.PublishEtcdDir(ctx, *source, etcdOpts(), abs)
	} else {
		if *toRev <= 0 {
			return usageError{errors.New("--to-revision is required (a positive etcd revision)")}
		}
		res, err = configsync.RollbackEtcd(ctx, *source, etcdOpts(), *toRev)
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(res)
}
