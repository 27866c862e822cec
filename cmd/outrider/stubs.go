package main

// Placeholders for subcommands under construction; each is replaced by its
// own file (configsync.go, top.go, ca.go, preflight.go, demo.go).

import (
	"context"
	"errors"
	"io"
)

var errNotBuilt = errors.New("this subcommand is not built yet")

func runDemo(context.Context, []string, io.Writer, io.Writer) error { return errNotBuilt }
