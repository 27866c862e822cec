package main

import (
	"log/slog"
	"os"
	"path/filepath"

	"github.com/outrider-dev/outrider/certs"
	"github.com/prometheus/client_golang/prometheus"
)

// certFlags are the certificate-source flags of `outrider proxy`.
type certFlags struct {
	domains  *listFlag
	cert     *string
	key      *string
	internal *bool
	storage  *string

	acmeEmail     *string
	acmeDirectory *listFlag
	acmeCARoot    *string
}

func addCertFlags(fs *flagSet) *certFlags {
	return &certFlags{
		domains:  newListFlag(fs, "domain", "`name` to serve and obtain a certificate for"),
		cert:     fs.String("cert", "", "static certificate `file` (PEM, chain included); reloaded when it changes"),
		key:      fs.String("key", "", "static private key `file` (PEM) for --cert"),
		internal: fs.Bool("tls-internal", false, "issue certificates from a local CA kept in --storage (on when neither --domain nor --cert is given)"),
		storage:  fs.String("storage", defaultStorage(), "`dir` for certificates, ACME account and internal CA"),

		acmeEmail:     fs.String("acme-email", "", "ACME account contact `email`"),
		acmeDirectory: newListFlag(fs, "acme-directory", "ACME directory `URL`; repeat for fallback issuers", "https://acme-v02.api.letsencrypt.org/directory"),
		acmeCARoot:    fs.String("acme-ca-root", "", "PEM `file` of roots trusted for the ACME server's own HTTPS (default: system roots)"),
	}
}

// defaultStorage is $XDG_DATA_HOME/outrider, else /var/lib/outrider.
func defaultStorage() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "outrider")
	}
	return "/var/lib/outrider"
}

func (cf *certFlags) config(log *slog.Logger, reg prometheus.Registerer) certs.Config {
	return certs.Config{
		CertFile:   *cf.cert,
		KeyFile:    *cf.key,
		Domains:    cf.domains.values,
		Internal:   *cf.internal || (*cf.cert == "" && len(cf.domains.values) == 0),
		Logger:     log,
		Registerer: reg,
	}
}
