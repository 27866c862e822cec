package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/outrider-dev/outrider/certs"
)

// runCA is `outrider ca root --storage DIR`: it prints the internal CA's
// root certificate so that users can trust it.
func runCA(ctx context.Context, args []string, stdout, _ io.Writer) error {
	if len(args) == 0 || (args[0] != "root" && args[0] != "-h" && args[0] != "--help") {
		return usageError{errors.New("outrider ca: expected a subcommand: root (try 'outrider ca root -h')")}
	}
	if args[0] != "root" {
		args = []string{"-h"}
	} else {
		args = args[1:]
	}
	fs := newFlagSet("outrider ca root", "Print the internal CA's root certificate (PEM) kept in --storage,\n"+
		"for users and clients to trust (outrider proxy --tls-internal creates it).")
	fs.share("storage") // the proxy's --storage
	storage := fs.String("storage", defaultStorage(), "`dir` or etcd://host:2379/prefix where outrider proxy keeps the internal CA")
	etcd := addEtcdFlags(fs)
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	pem, err := certs.InternalRootPEM(ctx, *storage, certs.EtcdConfig{Client: etcd()})
	if err != nil {
		return err
	}
	if _, err := stdout.Write(pem); err != nil {
		return fmt.Errorf("writing root certificate: %w", err)
	}
	return nil
}
