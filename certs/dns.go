package certs

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"

	"github.com/caddyserver/certmagic"
	"github.com/libdns/rfc2136"
	"go.uber.org/zap"
)

// DNS-01 providers, the values of Config.DNSProvider.
const (
	// DNSProviderRFC2136 updates the zone with DNS UPDATE (RFC 2136) signed
	// with TSIG, which BIND, Knot, PowerDNS and Windows DNS accept.
	DNSProviderRFC2136 = "rfc2136"
	// DNSProviderExecPrefix starts an exec provider: "exec:/path/cmd" runs
	// cmd present|cleanup FQDN VALUE.
	DNSProviderExecPrefix = "exec:"
)

// defaultPropagationTimeout is how long the propagation check waits for the
// TXT record by default (certmagic's default too).
const defaultPropagationTimeout = 2 * time.Minute

// dnsEnabled reports whether DNS-01 is configured.
func (c Config) dnsEnabled() bool { return c.DNSProvider != "" }

// validateDNS reports the problems of the DNS-01 fields.
func (c Config) validateDNS() []error {
	var errs []error
	p := c.DNSProvider
	switch {
	case p == "":
		if c.DNSServer != "" || c.DNSTSIGKeyFile != "" {
			errs = append(errs, errors.New("--acme-dns-server and --acme-dns-tsig-key-file need --acme-dns rfc2136"))
		}
		if len(c.DNSResolvers) > 0 {
			errs = append(errs, errors.New("--acme-dns-resolvers needs --acme-dns"))
		}
	case p == DNSProviderRFC2136:
		if c.DNSServer == "" {
			errs = append(errs, errors.New("--acme-dns rfc2136 needs --acme-dns-server HOST:PORT (the primary that accepts DNS UPDATE)"))
		} else if _, err := dnsServerAddr(c.DNSServer); err != nil {
			errs = append(errs, err)
		}
		if c.DNSTSIGKeyFile == "" {
			errs = append(errs, errors.New("--acme-dns rfc2136 needs --acme-dns-tsig-key-file (a BIND key file; unsigned updates are not sent)"))
		}
	case strings.HasPrefix(p, DNSProviderExecPrefix):
		path := strings.TrimPrefix(p, DNSProviderExecPrefix)
		if !filepath.IsAbs(path) {
			errs = append(errs, fmt.Errorf("--acme-dns %q: the command must be an absolute path", p))
		}
		if c.DNSServer != "" || c.DNSTSIGKeyFile != "" {
			errs = append(errs, errors.New("--acme-dns-server and --acme-dns-tsig-key-file are for --acme-dns rfc2136, not exec"))
		}
	default:
		errs = append(errs, fmt.Errorf("--acme-dns %q: unknown provider (rfc2136 or exec:/path/to/cmd)", p))
	}
	for _, r := range c.DNSResolvers {
		if _, err := dnsServerAddr(r); err != nil {
			errs = append(errs, fmt.Errorf("--acme-dns-resolvers: %w", err))
		}
	}
	return errs
}

// dnsServerAddr returns addr as host:port, adding port 53 when it has none.
func dnsServerAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		// No port: a host name, an IPv4 address or a bare IPv6 address.
		host, port = strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]"), "53"
	}
	if host == "" || strings.ContainsAny(host, " /") {
		return "", fmt.Errorf("DNS server %q is not HOST or HOST:PORT", addr)
	}
	return net.JoinHostPort(host, port), nil
}

// newDNSSolver builds certmagic's DNS-01 solver over the configured libdns
// provider. It reads the TSIG key file now, so that a bad one is an error
// at start-up.
func newDNSSolver(cfg Config, zl *zap.Logger) (*certmagic.DNS01Solver, error) {
	var provider certmagic.DNSProvider
	switch p := cfg.DNSProvider; {
	case p == DNSProviderRFC2136:
		key, err := readTSIGKeyFile(cfg.DNSTSIGKeyFile)
		if err != nil {
			return nil, err
		}
		server, _ := dnsServerAddr(cfg.DNSServer) // checked by Validate
		provider = &rfc2136.Provider{KeyName: key.name, KeyAlg: key.algorithm, Key: key.secret, Server: server}
	case strings.HasPrefix(p, DNSProviderExecPrefix):
		path := strings.TrimPrefix(p, DNSProviderExecPrefix)
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("--acme-dns %s: %w", p, err)
		}
		if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return nil, fmt.Errorf("--acme-dns %s: not an executable file", p)
		}
		provider = &execProvider{path: path, log: cfg.Logger}
	}
	timeout := cfg.DNSPropagationTimeout
	switch {
	case timeout == 0:
		timeout = defaultPropagationTimeout
	case timeout < 0:
		timeout = -1 // certmagic: no propagation check
	}
	resolvers := make([]string, 0, len(cfg.DNSResolvers))
	for _, r := range cfg.DNSResolvers {
		a, _ := dnsServerAddr(r) // checked by Validate
		resolvers = append(resolvers, a)
	}
	return &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{
		DNSProvider:        provider,
		PropagationTimeout: timeout,
		Resolvers:          resolvers,
		Logger:             zl,
	}}, nil
}

// tsigKey is a TSIG key read from a BIND key file. The secret is never
// logged nor put in an error.
type tsigKey struct {
	name, algorithm, secret string
}

// tsigAlgorithms maps BIND's algorithm names to the names DNS messages
// carry (RFC 8945; HMAC-MD5 has a long legacy name).
var tsigAlgorithms = map[string]string{
	"hmac-md5":    "hmac-md5.sig-alg.reg.int",
	"hmac-sha1":   "hmac-sha1",
	"hmac-sha224": "hmac-sha224",
	"hmac-sha256": "hmac-sha256",
	"hmac-sha384": "hmac-sha384",
	"hmac-sha512": "hmac-sha512",
}

func readTSIGKeyFile(path string) (tsigKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return tsigKey{}, fmt.Errorf("reading --acme-dns-tsig-key-file: %w", err)
	}
	k, err := parseTSIGKey(string(b))
	if err != nil {
		return tsigKey{}, fmt.Errorf("--acme-dns-tsig-key-file %s: %w", path, err)
	}
	return k, nil
}

// parseTSIGKey reads the one key statement of a BIND key file, as written
// by tsig-keygen, ddns-confgen and rndc-confgen:
//
//	key "name" {
//		algorithm hmac-sha256;
//		secret "base64…";
//	};
//
// Comments (#, //, /* */) are allowed. Errors never quote the secret.
func parseTSIGKey(text string) (tsigKey, error) {
	toks, err := bindTokens(text)
	if err != nil {
		return tsigKey{}, err
	}
	var k tsigKey
	next := func() string {
		if len(toks) == 0 {
			return ""
		}
		t := toks[0]
		toks = toks[1:]
		return t
	}
	expect := func(want string) error {
		if got := next(); got != want {
			if got == "" {
				return fmt.Errorf("unexpected end of file, want %q", want)
			}
			return fmt.Errorf("want %q, found %q", want, got)
		}
		return nil
	}
	if t := next(); t != "key" {
		return k, errors.New(`not a BIND key file: want key "name" { algorithm …; secret "…"; };`)
	}
	k.name = strings.TrimSuffix(unquote(next()), ".")
	if k.name == "" || k.name == "{" {
		return k, errors.New("key statement has no name")
	}
	if err := expect("{"); err != nil {
		return k, err
	}
	for len(toks) > 0 && toks[0] != "}" {
		switch field := next(); field {
		case "algorithm":
			k.algorithm = strings.ToLower(strings.TrimSuffix(unquote(next()), "."))
		case "secret":
			k.secret = unquote(next())
		default:
			return k, fmt.Errorf("unknown key field %q (want algorithm and secret)", field)
		}
		if err := expect(";"); err != nil {
			return k, err
		}
	}
	if err := expect("}"); err != nil {
		return k, err
	}
	if len(toks) > 0 && toks[0] == ";" {
		toks = toks[1:]
	}
	if len(toks) > 0 {
		return k, errors.New("more than one statement: the file must hold exactly one key")
	}
	if k.algorithm == "" {
		return k, errors.New("key has no algorithm")
	}
	alg, ok := tsigAlgorithms[k.algorithm]
	if !ok {
		return k, fmt.Errorf("algorithm %q not supported (hmac-sha256, hmac-sha512, hmac-sha384, hmac-sha224, hmac-sha1, hmac-md5)", k.algorithm)
	}
	k.algorithm = alg
	if k.secret == "" {
		return k, errors.New("key has no secret")
	}
	if _, err := base64.StdEncoding.DecodeString(k.secret); err != nil {
		return k, errors.New("secret is not base64") // the secret itself stays out of the message
	}
	return k, nil
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

// bindTokens splits BIND configuration text into words, quoted strings
// (kept with their quotes) and the punctuation { } ;, dropping comments.
func bindTokens(s string) ([]string, error) {
	var toks []string
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case unicode.IsSpace(rune(c)):
			i++
		case c == '#' || strings.HasPrefix(s[i:], "//"):
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case strings.HasPrefix(s[i:], "/*"):
			end := strings.Index(s[i+2:], "*/")
			if end < 0 {
				return nil, errors.New("unterminated /* comment")
			}
			i += end + 4
		case c == '{' || c == '}' || c == ';':
			toks = append(toks, string(c))
			i++
		case c == '"':
			end := strings.IndexByte(s[i+1:], '"')
			if end < 0 {
				return nil, errors.New("unterminated quoted string")
			}
			toks = append(toks, s[i:i+end+2])
			i += end + 2
		default:
			j := i
			for j < len(s) && !unicode.IsSpace(rune(s[j])) && !strings.ContainsRune(`{};"#`, rune(s[j])) {
				j++
			}
			if j == i { // a lone '/' not starting a comment
				j++
			}
			toks = append(toks, s[i:j])
			i = j
		}
	}
	return toks, nil
}
