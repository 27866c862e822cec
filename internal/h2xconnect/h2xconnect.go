// Package h2xconnect turns on extended CONNECT (RFC 8441) in net/http's
// HTTP/2 server, so that browsers can open WebSockets over HTTP/2. Import it
// for its side effect, before anything else, in package main only:
//
//	import _ "github.com/outrider-dev/outrider/internal/h2xconnect"
//
// Go 1.26 has no http.Server or HTTP2Config field for it: net/http reads
// GODEBUG=http2xconnect=1 from the environment once, in its own init (Go
// issue #71128), and a //go:debug directive does not reach that read. This
// package's init sets the variable before net/http's runs: the Go spec
// initialises packages in import-path order among those whose imports are
// done, this package imports only os and strings, and its path sorts before
// "net/http". Call [Restore] once main runs, so that child processes (a
// configsync --validate or --notify command, a Go app among them) do not
// inherit the setting.
//
// A GODEBUG that already names http2xconnect (=0 turns it off) is left as
// it is.
package h2xconnect

import (
	"os"
	"strings"
)

const setting = "http2xconnect=1"

var (
	prev, hadPrev = os.LookupEnv("GODEBUG")
	changed       bool
)

func init() {
	if strings.Contains(prev, "http2xconnect=") {
		return
	}
	v := setting
	if prev != "" {
		v = prev + "," + setting
	}
	os.Setenv("GODEBUG", v)
	changed = true
}

// Restore puts GODEBUG back as it was before init. net/http has read it by
// the time main runs.
func Restore() {
	if !changed {
		return
	}
	if hadPrev {
		os.Setenv("GODEBUG", prev)
	} else {
		os.Unsetenv("GODEBUG")
	}
	changed = false
}
