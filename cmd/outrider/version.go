package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version and commit are set at build time with
// -ldflags "-X main.version=v1.2.3 -X main.commit=$(git rev-parse HEAD)"
// (the Dockerfile does, from its VERSION and COMMIT build arguments: an
// image is built without .git, so Go's own VCS stamp is not there).
var (
	version = "dev"
	commit  = ""
)

type buildInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"go_version"`
}

func readBuildInfo() buildInfo {
	bi := buildInfo{Version: version, Commit: "unknown", GoVersion: runtime.Version()}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				bi.Commit = s.Value
			}
		}
	}
	if commit != "" {
		bi.Commit = commit
	}
	return bi
}

func runVersion(_ context.Context, args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("outrider version", "Print the version, commit and Go version.")
	asJSON := fs.Bool("json", false, "print JSON for machines")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	bi := readBuildInfo()
	if *asJSON {
		return json.NewEncoder(stdout).Encode(bi)
	}
	_, err := fmt.Fprintf(stdout, "outrider %s (commit %s, %s)\n", bi.Version, bi.Commit, bi.GoVersion)
	return err
}
