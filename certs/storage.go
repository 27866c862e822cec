package certs

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/caddyserver/certmagic"
)

// openStorage returns the backend for a --storage location. It is the one
// place that chooses a backend: ACME accounts and certificates (certmagic),
// the internal CA and the order ledger all go through the certmagic.Storage
// it returns, so a shared backend (etcd) needs only a new case here.
//
// An etcd:// location gives the etcd storage shared by replicas
// (etcdstorage.go), configured by the optional EtcdConfig. A directory path
// gives certmagic's FileStorage, which writes files 0600 in directories 0700
// and locks with lock files.
func openStorage(location string, etcd EtcdConfig) (certmagic.Storage, error) {
	switch {
	case location == "":
		return nil, errors.New("no --storage given: ACME and the internal CA keep keys and certificates there")
	case strings.HasPrefix(location, "etcd://"):
		return openEtcdStorage(location, etcd) // shared by replicas; see etcdstorage.go
	case strings.Contains(location, "://"):
		return nil, fmt.Errorf("storage %q: %w", location, ErrStorageUnsupported)
	}
	abs, err := filepath.Abs(location)
	if err != nil {
		return nil, fmt.Errorf("resolving storage path %q: %w", location, err)
	}
	return &certmagic.FileStorage{Path: abs}, nil
}
