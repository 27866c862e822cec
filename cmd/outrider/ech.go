package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/outrider-dev/outrider/certs"
)

// runECH is `outrider ech config --storage DIR`: it prints the current
// ECHConfigList, base64-encoded, for the ech= parameter of an HTTPS DNS
// record.
func runECH(ctx context.Context, args []string, stdout, _ io.Writer) error {
	if len(args) == 0 || (args[0] != "config" && args[0] != "-h" && args[0] != "--help") {
		return usageError{errors.New("outrider ech: expected a subcommand: config (try 'outrider ech config -h')")}
	}
	if args[0] != "config" {
		args = []string{"-h"}
	} else {
		args = args[1:]
	}
	fs := newFlagSet("outrider ech config", "Print the ECHConfigList of the Encrypted Client Hello keys kept in --storage\n"+
		"(base64, one line), for the ech= parameter of the public name's HTTPS DNS record.\n"+
		"outrider proxy --ech PUBLIC_NAME creates and rotates the keys; publish again after each rotation.")
	storage := fs.String("storage", defaultStorage(), "`dir` or etcd://host:2379/prefix where outrider proxy keeps its ECH keys")
	etcd := addEtcdFlags(fs)
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	list, err := certs.ECHConfigList(ctx, *storage, certs.EtcdConfig{Client: etcd()})
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(list)); err != nil {
		return fmt.Errorf("writing ECHConfigList: %w", err)
	}
	return nil
}

// echHandler serves the current ECHConfigList on the admin listener
// (/ech), base64 like `outrider ech config`.
func echHandler(configList func() []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		list := configList()
		if list == nil {
			http.Error(w, "ECH keys not loaded yet", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprintln(w, base64.StdEncoding.EncodeToString(list))
	})
}
