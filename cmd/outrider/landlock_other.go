//go:build !linux

package main

import (
	"errors"
	"log/slog"
)

type sandboxPaths struct{}

func proxySandbox(*certFlags, *configsyncFlags, string, bool) (sandboxPaths, error) {
	return sandboxPaths{}, errors.New("--landlock needs Linux 5.13 or later")
}

func restrictFiles(*slog.Logger, sandboxPaths) error { return nil }

func (*sandboxPaths) addWatchedFiles(...string) {}
