package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/outrider-dev/outrider/certs"
	"github.com/outrider-dev/outrider/internal/etcdclient"
	"github.com/prometheus/client_golang/prometheus"
)

// certFlags are the certificate-source flags of `outrider proxy`.
type certFlags struct {
	fs       *flagSet // to read --listen and --http-listen (challenge ports)
	domains  *listFlag
	cert     *string
	key      *string
	internal *bool
	storage  *string

	acmeEmail          *string
	acmeDirectory      *listFlag
	acmeCARoot         *string
	acmeEABKID         *string
	acmeEABHMACFile    *string
	acmeProfile        *string
	renewCheckInterval *time.Duration
	duplicateLimit     *int
	forceOrder         *bool

	acmeDNS                   *string
	acmeDNSServer             *string
	acmeDNSTSIGKeyFile        *string
	acmeDNSResolvers          *listFlag
	acmeDNSPropagationTimeout *time.Duration

	onDemandAsk      *string
	onDemandMaxNames *int
	onDemandRate     *int

	ech               *string
	echRotateInterval *time.Duration
	echGrace          *time.Duration

	ocspRefreshInterval *time.Duration

	etcd        func() etcdclient.Options // --etcd-* (etcdflags.go)
	etcdLockTTL *time.Duration
}

func addCertFlags(fs *flagSet) *certFlags {
	return &certFlags{
		fs:       fs,
		domains:  newListFlag(fs, "domain", "`name` to serve and obtain a certificate for"),
		cert:     fs.String("cert", "", "static certificate `file` (PEM, chain included); reloaded when it changes"),
		key:      fs.String("key", "", "static private key `file` (PEM) for --cert"),
		internal: fs.Bool("tls-internal", false, "issue certificates from a local CA kept in --storage (on when neither --domain nor --cert is given)"),
		storage:  fs.String("storage", defaultStorage(), "`dir` for certificates, ACME account and internal CA, or etcd://host:2379[,host2:2379]/prefix shared by replicas"),

		acmeEmail:     fs.String("acme-email", "", "ACME account contact `email`"),
		acmeDirectory: newListFlag(fs, "acme-directory", "ACME directory `URL`; repeat for fallback issuers", certs.LetsEncryptProduction),
		acmeCARoot:    fs.String("acme-ca-root", "", "PEM `file` of roots trusted for the ACME server's own HTTPS (default: system roots)"),
		acmeEABKID:    fs.String("acme-eab-kid", "", "external account binding key `ID` (ZeroSSL, Google)"),
		acmeEABHMACFile: fs.String("acme-eab-hmac-file", "",
			"`file` holding the external account binding HMAC key (base64url), for --acme-eab-kid"),
		acmeProfile: fs.String("acme-profile", "", "ACME certificate `profile` offered by the CA (e.g. shortlived); kept for renewals"),
		renewCheckInterval: durationFlag(fs, "acme-renew-check-interval", 10*time.Minute,
			"longest time between renewal checks (expiry and ACME ARI windows); short-lived certificates are checked every twentieth of their lifetime"),
		duplicateLimit: fs.Int("acme-duplicate-limit", 5,
			"most certificates obtained for the same name set in 7 days (recorded in --storage); further orders are refused; -1: no limit"),
		forceOrder: fs.Bool("acme-force-order", false, "order even beyond --acme-duplicate-limit"),

		acmeDNS: fs.String("acme-dns", "", "DNS-01 `provider`: rfc2136 (DNS UPDATE with TSIG) or exec:/path/cmd (run as cmd present|cleanup FQDN VALUE); "+
			"DNS names are then validated by DNS-01 only, and wildcard --domain names become possible"),
		acmeDNSServer: fs.String("acme-dns-server", "", "primary DNS server `HOST:PORT` that accepts the DNS UPDATEs of --acme-dns rfc2136 (port 53 if none)"),
		acmeDNSTSIGKeyFile: fs.String("acme-dns-tsig-key-file", "",
			"TSIG key `file` in BIND format (tsig-keygen's output) signing the updates of --acme-dns rfc2136"),
		acmeDNSResolvers: newListFlag(fs, "acme-dns-resolvers",
			"DNS server `HOST:PORT` asked for the zone and the propagation check of DNS-01 (default: system resolvers, then the zone's own servers)"),
		acmeDNSPropagationTimeout: durationFlag(fs, "acme-dns-propagation-timeout", 2*time.Minute,
			"how long DNS-01 waits for its TXT record to be visible before asking the CA to validate; 0 skips the check"),

		onDemandAsk: fs.String("on-demand-ask", "", "`URL` asked GET URL?domain=NAME at the first handshake for a name not in --domain; "+
			"a 2xx answer lets a certificate be obtained for it then (off when empty)"),
		onDemandMaxNames: fs.Int("on-demand-max-names", 1000, "most names that get on-demand certificates; further names are refused"),
		onDemandRate:     fs.Int("on-demand-rate", 10, "most new on-demand certificate orders in any minute; further handshakes fail until the minute passes"),

		ech: fs.String("ech", "", "Encrypted Client Hello: the public (outer) `name` clients show in the clear; keys kept in --storage, "+
			"the ECHConfigList on admin /ech and from 'outrider ech config'"),
		echRotateInterval: durationFlag(fs, "ech-rotate-interval", 30*24*time.Hour, "how long an ECH key is the published one before a new key replaces it"),
		echGrace:          durationFlag(fs, "ech-grace", 7*24*time.Hour, "how long a replaced ECH key is still accepted (cover the HTTPS record's TTL and the time to publish)"),

		ocspRefreshInterval: durationFlag(fs, "ocsp-refresh-interval", 0,
			"longest time an OCSP response stapled to --cert is used before a fresh one is fetched (0: half-way to its next update); failed fetches are retried at most this far apart"),

		etcd:        addEtcdFlags(fs),
		etcdLockTTL: addEtcdLockTTLFlag(fs),
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
	cfg := certs.Config{
		CertFile:           *cf.cert,
		KeyFile:            *cf.key,
		Domains:            cf.domains.values,
		Internal:           *cf.internal || (*cf.cert == "" && len(cf.domains.values) == 0 && *cf.onDemandAsk == ""),
		Storage:            *cf.storage,
		Etcd:               certs.EtcdConfig{Client: cf.etcd(), LockTTL: *cf.etcdLockTTL, Logger: log},
		ACMEDirectories:    cf.acmeDirectory.values,
		ACMEEmail:          *cf.acmeEmail,
		ACMECARootFile:     *cf.acmeCARoot,
		ACMEEABKeyID:       *cf.acmeEABKID,
		ACMEEABHMACFile:    *cf.acmeEABHMACFile,
		ACMEProfile:        *cf.acmeProfile,
		RenewCheckInterval: *cf.renewCheckInterval,
		DuplicateLimit:     *cf.duplicateLimit,
		ForceOrder:         *cf.forceOrder,

		DNSProvider:           *cf.acmeDNS,
		DNSServer:             *cf.acmeDNSServer,
		DNSTSIGKeyFile:        *cf.acmeDNSTSIGKeyFile,
		DNSResolvers:          cf.acmeDNSResolvers.values,
		DNSPropagationTimeout: *cf.acmeDNSPropagationTimeout,
		OnDemandAsk:           *cf.onDemandAsk,
		OnDemandMaxNames:      *cf.onDemandMaxNames,
		OnDemandRate:          *cf.onDemandRate,
		ECHPublicName:         *cf.ech,
		ECHRotateInterval:     *cf.echRotateInterval,
		ECHGrace:              *cf.echGrace,
		OCSPRefreshInterval:   *cf.ocspRefreshInterval,
		Logger:                log,
		Registerer:            reg,
	}
	if *cf.acmeDNSPropagationTimeout == 0 {
		cfg.DNSPropagationTimeout = -1 // 0 would mean the default in certs.Config
	}
	// 0 would mean the defaults in certs.Config; here it is refused.
	if *cf.echRotateInterval == 0 {
		cfg.ECHRotateInterval = -1
	}
	if *cf.echGrace == 0 {
		cfg.ECHGrace = -1
	}
	if *cf.onDemandMaxNames == 0 {
		cfg.OnDemandMaxNames = -1
	}
	if *cf.onDemandRate == 0 {
		cfg.OnDemandRate = -1
	}
	if *cf.duplicateLimit == 0 {
		cfg.DuplicateLimit = -1 // 0 would mean the default in certs.Config
	}
	// The challenges are answered on our own listeners: certmagic must know
	// their ports to see them in use rather than bind its own.
	cfg.HTTPChallengePort, cfg.DisableHTTPChallenge = challengePort(cf.fs, "http-listen", log)
	cfg.TLSALPNChallengePort, cfg.DisableTLSALPNChallenge = challengePort(cf.fs, "listen", log)
	return cfg
}

// challengePort returns the port of a listener flag, or disabled when the
// listener is off or its port is only known after binding (0).
func challengePort(fs *flagSet, name string, log *slog.Logger) (port int, disabled bool) {
	f := fs.Lookup(name)
	if f == nil || f.Value.String() == "" {
		return 0, true
	}
	_, p, err := net.SplitHostPort(f.Value.String())
	if err != nil {
		return 0, true // the proxy reports the bad address
	}
	n, err := strconv.Atoi(p)
	if err != nil || n == 0 {
		if log != nil {
			log.Debug(fmt.Sprintf("--%s has no fixed port; its ACME challenge type is off", name))
		}
		return 0, true
	}
	return n, false
}
