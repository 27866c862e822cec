// Package etcdclient turns an etcd:// location and the --etcd-* options into
// an etcd v3 client. It has two callers: certs (the shared certificate
// storage) and configsync (the etcd config source). It keeps no state.
package etcdclient

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Scheme is the URL scheme of etcd locations: etcd://host:2379[,host2:2379]/prefix.
const Scheme = "etcd"

// Target is a parsed etcd location.
type Target struct {
	// Endpoints are the host:port pairs of the cluster members, in the
	// order given.
	Endpoints []string
	// Prefix is the key prefix: the URL's path, cleaned, starting with "/"
	// and without a trailing "/" ("/outrider/certs"). Never empty or "/".
	Prefix string
}

// String returns the location without credentials (it never holds any).
func (t Target) String() string {
	return Scheme + "://" + strings.Join(t.Endpoints, ",") + t.Prefix
}

// ParseURL parses etcd://host:2379[,host2:2379]/prefix. A port is required
// on every host; the prefix is required, so that every cluster (or every
// app) keeps its keys apart from the others'.
func ParseURL(raw string) (Target, error) {
	rest, ok := strings.CutPrefix(raw, Scheme+"://")
	if !ok {
		return Target{}, fmt.Errorf("etcd location %q: want etcd://host:2379[,host2:2379]/prefix", raw)
	}
	if strings.ContainsAny(rest, "?#@") {
		return Target{}, fmt.Errorf("etcd location %q: query, fragment and user info are not supported (credentials go in --etcd-username and --etcd-password-file)", raw)
	}
	hosts, p, _ := strings.Cut(rest, "/")
	var t Target
	for _, h := range strings.Split(hosts, ",") {
		h = strings.TrimSpace(h)
		host, port, err := net.SplitHostPort(h)
		if err != nil || host == "" || port == "" {
			return Target{}, fmt.Errorf("etcd location %q: endpoint %q: want host:port", raw, h)
		}
		t.Endpoints = append(t.Endpoints, h)
	}
	t.Prefix = path.Clean("/" + p)
	if t.Prefix == "/" {
		return Target{}, fmt.Errorf("etcd location %q: a key prefix is required (etcd://host:2379/outrider)", raw)
	}
	return t, nil
}

// Options are the client settings shared by every etcd location: the
// --etcd-* flags. The zero value is a plain-text, unauthenticated client.
type Options struct {
	// CAFile is a PEM file of roots the members' certificates are verified
	// against. Setting it (or CertFile) turns TLS on.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and key, for
	// members that require client certificates. Both or neither.
	CertFile, KeyFile string
	// Username and PasswordFile turn on etcd's user authentication; the
	// file holds the password (a trailing newline is ignored). Both or
	// neither.
	Username, PasswordFile string
	// DialTimeout bounds the first connection. If zero, 5s.
	DialTimeout time.Duration
}

// TLS reports whether the options ask for TLS.
func (o Options) TLS() bool { return o.CAFile != "" || o.CertFile != "" }

// Validate reports every problem with o, without reading any file.
func (o Options) Validate() error {
	var errs []error
	if (o.CertFile == "") != (o.KeyFile == "") {
		errs = append(errs, errors.New("--etcd-cert-file and --etcd-key-file go together"))
	}
	if (o.Username == "") != (o.PasswordFile == "") {
		errs = append(errs, errors.New("--etcd-username and --etcd-password-file go together"))
	}
	if o.DialTimeout < 0 {
		errs = append(errs, fmt.Errorf("etcd dial timeout %v is negative", o.DialTimeout))
	}
	return errors.Join(errs...)
}

// Config returns the client configuration for t, reading the CA,
// certificate and password files. The client logs nothing (its Logger is
// zap's no-op logger: errors come back to the caller, which logs them
// through slog); a caller may set Logger before [clientv3.New].
func (o Options) Config(t Target) (clientv3.Config, error) {
	if err := o.Validate(); err != nil {
		return clientv3.Config{}, err
	}
	cfg := clientv3.Config{
		Endpoints:   t.Endpoints,
		DialTimeout: o.DialTimeout,
		// Notice a dead member within seconds, not the OS's TCP timeout,
		// so that watches and lock leases move to a live one.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Logger:               zap.NewNop(),
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if o.TLS() {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if o.CAFile != "" {
			b, err := os.ReadFile(o.CAFile)
			if err != nil {
				return clientv3.Config{}, fmt.Errorf("reading --etcd-ca-file: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(b) {
				return clientv3.Config{}, fmt.Errorf("--etcd-ca-file %s: no PEM certificate in the file", o.CAFile)
			}
		}
		if o.CertFile != "" {
			c, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
			if err != nil {
				return clientv3.Config{}, fmt.Errorf("loading --etcd-cert-file and --etcd-key-file: %w", err)
			}
			tc.Certificates = []tls.Certificate{c}
		}
		cfg.TLS = tc
	}
	if o.Username != "" {
		b, err := os.ReadFile(o.PasswordFile)
		if err != nil {
			return clientv3.Config{}, fmt.Errorf("reading --etcd-password-file: %w", err)
		}
		pw := strings.TrimRight(string(b), "\r\n")
		if pw == "" {
			return clientv3.Config{}, fmt.Errorf("--etcd-password-file %s is empty", o.PasswordFile)
		}
		cfg.Username, cfg.Password = o.Username, pw
	}
	return cfg, nil
}

// New returns a client for t. It does not wait for a connection: the first
// request does (bounded by its context).
func New(t Target, o Options) (*clientv3.Client, error) {
	cfg, err := o.Config(t)
	if err != nil {
		return nil, err
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating etcd client for %s: %w", t, err)
	}
	return c, nil
}
