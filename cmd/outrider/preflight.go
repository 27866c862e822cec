package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/outrider-dev/outrider/certs"
)

// preflightPath is where the temporary listeners answer the check token.
const preflightPath = "/.well-known/outrider-preflight"

// runPreflight is `outrider preflight --domain NAME …`: before any ACME
// order, it checks that each NAME resolves, and that ports 80 and 443 of
// NAME reach this process, by serving a random token on temporary
// listeners and fetching it through NAME. It exits non-zero when ordering
// would fail.
func runPreflight(ctx context.Context, args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("outrider preflight", "Check, before any ACME order, that each --domain resolves and that the\n"+
		"CA's ports 80 (HTTP-01) and 443 (TLS-ALPN-01) reach this host. Run it where\n"+
		"outrider proxy will run, while the proxy is stopped: it binds the same addresses.")
	// The proxy's own flags, with the proxy's twins: run preflight with the
	// proxy's environment and it checks what the proxy will do.
	fs.share("domain", "listen", "http-listen", "acme-directory")
	domains := newListFlag(fs, "domain", "`name` to check")
	directories := newListFlag(fs, "acme-directory", "ACME directory `URL` the proxy will use: with a public CA, names and addresses it refuses fail the check; with a private one they are warnings",
		certs.LetsEncryptProduction)
	httpListen := fs.String("http-listen", ":80", "plain-HTTP `address` outrider proxy will listen on; empty skips the HTTP-01 check")
	listen := fs.String("listen", ":443", "HTTPS `address` outrider proxy will listen on; empty skips the TLS-ALPN-01 check")
	httpPort := fs.Int("http-port", 80, "`port` the CA dials for HTTP-01 (differs from --http-listen behind port forwarding); 0: the port bound by --http-listen")
	httpsPort := fs.Int("https-port", 443, "`port` the CA dials for TLS-ALPN-01; 0: the port bound by --listen")
	timeout := durationFlag(fs, "timeout", 5*time.Second, "how long each lookup and connection may take")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if len(domains.values) == 0 {
		return usageError{errors.New("give at least one --domain")}
	}
	token := make([]byte, 16)
	rand.Read(token)
	pf := &preflight{out: stdout, token: hex.EncodeToString(token), timeout: *timeout,
		publicCA: slices.ContainsFunc(directories.values, isPublicCA)}

	var checks []portCheck
	for _, l := range []struct {
		addr, scheme, challenge string
		port                    int
	}{{*httpListen, "http", "HTTP-01", *httpPort}, {*listen, "https", "TLS-ALPN-01", *httpsPort}} {
		if l.addr == "" {
			continue
		}
		bound, stop, err := pf.serve(l.addr, l.scheme == "https")
		if err != nil {
			pf.fail("%s: cannot listen on %s: %s", l.challenge, l.addr, bindAdvice(err))
			continue
		}
		defer stop()
		port := l.port
		if port == 0 {
			port = bound
		}
		checks = append(checks, portCheck{scheme: l.scheme, challenge: l.challenge, port: port})
	}
	local := localAddrs()
	for _, d := range domains.values {
		pf.checkDomain(ctx, d, local, checks)
	}
	if pf.failures > 0 {
		return fmt.Errorf("preflight: %d problem(s): an ACME order would fail", pf.failures)
	}
	fmt.Fprintln(stdout, "preflight passed: ACME ordering can succeed")
	return nil
}

type preflight struct {
	out      io.Writer
	token    string
	timeout  time.Duration
	publicCA bool // a directory is a public CA's: it refuses private names
	failures int
}

type portCheck struct {
	scheme, challenge string
	port              int
}

func (pf *preflight) ok(format string, a ...any) { fmt.Fprintf(pf.out, "ok    "+format+"\n", a...) }
func (pf *preflight) warn(format string, a ...any) {
	fmt.Fprintf(pf.out, "warn  "+format+"\n", a...)
}
func (pf *preflight) fail(format string, a ...any) {
	pf.failures++
	fmt.Fprintf(pf.out, "FAIL  "+format+"\n", a...)
}

// serve starts a temporary listener answering the token and returns its port.
func (pf *preflight) serve(addr string, useTLS bool) (port int, stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return 0, nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+preflightPath, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, pf.token) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: pf.timeout}
	if useTLS {
		cert, err := selfSigned()
		if err != nil {
			ln.Close()
			return 0, nil, err
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
	}
	go srv.Serve(ln)
	return ln.Addr().(*net.TCPAddr).Port, func() { srv.Close() }, nil
}

// refusal reports what a public CA would refuse: a FAIL with a public CA,
// a warning with a private one (which may well issue for it).
func (pf *preflight) refusal(format string, a ...any) {
	if pf.publicCA {
		pf.fail(format+" (--acme-directory is a public CA)", a...)
	} else {
		pf.warn(format+" (fine if your private CA issues for it)", a...)
	}
}

func (pf *preflight) checkDomain(ctx context.Context, name string, local map[string]bool, checks []portCheck) {
	if why, always := nameProblem(name); why != "" {
		if always {
			pf.warn("%s: %s", name, why)
		} else {
			pf.refusal("%s: %s", name, why)
			if pf.publicCA {
				return // the order fails whatever the ports say
			}
		}
	} else {
		defer pf.checkAddresses(ctx, name)
	}
	lctx, cancel := context.WithTimeout(ctx, pf.timeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupIPAddr(lctx, name)
	if err != nil || len(addrs) == 0 {
		pf.fail("%s does not resolve (%v): add an A/AAAA record pointing at this host's public address", name, err)
		return
	}
	var ips []string
	anyLocal := false
	for _, a := range addrs {
		ips = append(ips, a.IP.String())
		anyLocal = anyLocal || local[a.IP.String()]
	}
	if anyLocal {
		pf.ok("%s resolves to %s, an address of this host", name, strings.Join(ips, ", "))
	} else {
		pf.warn("%s resolves to %s, not an address of this host (fine behind NAT or a load balancer if the port checks pass)", name, strings.Join(ips, ", "))
	}
	reached := 0
	for _, c := range checks {
		if err := pf.fetch(ctx, name, addrs[0].IP.String(), c); err != nil {
			pf.warn("%s: %s port %d does not reach this process: %v", name, c.challenge, c.port, err)
			continue
		}
		reached++
		pf.ok("%s: %s port %d reaches this process", name, c.challenge, c.port)
	}
	if reached == 0 {
		pf.fail("%s: no challenge port reaches this process: open or forward port 80 (HTTP-01) or 443 (TLS-ALPN-01) to it "+
			"(behind NAT without hairpinning, test from outside)", name)
	}
}

// fetch gets the token from ip:port with name as Host and SNI.
func (pf *preflight) fetch(ctx context.Context, name, ip string, c portCheck) error {
	hostPort := net.JoinHostPort(ip, strconv.Itoa(c.port))
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: pf.timeout}).DialContext(ctx, network, hostPort)
		},
		// The token proves it is us; the temporary certificate is self-signed.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: name},
		Proxy:           nil,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: pf.timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.scheme+"://"+net.JoinHostPort(name, strconv.Itoa(c.port))+preflightPath, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK || string(b) != pf.token {
		return fmt.Errorf("another server answered (status %d): something else holds that port or the forwarding goes elsewhere", resp.StatusCode)
	}
	return nil
}

// checkAddresses reports a name that resolves only to addresses the
// Internet cannot reach: a public CA validates from the Internet.
func (pf *preflight) checkAddresses(ctx context.Context, name string) {
	lctx, cancel := context.WithTimeout(ctx, pf.timeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(lctx, "ip", name)
	if err != nil || len(addrs) == 0 {
		return // reported by checkDomain
	}
	for _, a := range addrs {
		if !privateAddr(a) {
			return
		}
	}
	pf.refusal("%s resolves only to private addresses (%v): a public CA's validation comes from the Internet and cannot reach them; "+
		"publish a public address, or use a private ACME CA", name, addrs)
}

// nameProblem says why a public CA refuses name, or "" when it does not.
// always reports a problem that holds for every CA (only a warning).
func nameProblem(name string) (why string, always bool) {
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	if _, err := netip.ParseAddr(n); err == nil {
		return "an IP address: most public CAs issue only for DNS names (Let's Encrypt only with a short-lived profile, --acme-profile shortlived)", true
	}
	labels := strings.Split(n, ".")
	tld := labels[len(labels)-1]
	switch {
	case n == "localhost" || tld == "localhost":
		return "localhost names are never issued by a public CA; use --tls-internal", false
	case tld == "test" || tld == "example" || tld == "invalid":
		return "." + tld + " is reserved (RFC 2606) and never in public DNS", false
	case n == "example.com" || n == "example.net" || n == "example.org" ||
		strings.HasSuffix(n, ".example.com") || strings.HasSuffix(n, ".example.net") || strings.HasSuffix(n, ".example.org"):
		return "the example.com/.net/.org domains are reserved for documentation (RFC 2606)", false
	case tld == "local":
		return ".local is multicast DNS (RFC 6762), not public DNS", false
	case tld == "internal":
		return ".internal is reserved for private networks (ICANN, 2024) and never in public DNS", false
	case strings.HasSuffix(n, ".home.arpa") || n == "home.arpa":
		return "home.arpa is for home networks (RFC 8375), not public DNS", false
	case len(labels) == 1:
		return "a single-label name is not in public DNS", false
	}
	return "", false
}

// privateAddr reports whether a is unreachable from the Internet: private
// (RFC 1918, fc00::/7), loopback, link-local, shared (100.64.0.0/10) or
// benchmarking (198.18.0.0/15) space.
func privateAddr(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("198.18.0.0/15")} {
		if p.Contains(a) {
			return true
		}
	}
	return a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified()
}

// isPublicCA reports whether an ACME directory belongs to a public CA,
// which validates from the Internet and refuses private names.
func isPublicCA(dir string) bool {
	u, err := url.Parse(dir)
	if err != nil {
		return false
	}
	switch strings.ToLower(u.Hostname()) {
	case "acme-v02.api.letsencrypt.org", "acme-staging-v02.api.letsencrypt.org", "acme.zerossl.com",
		"dv.acme-v02.api.pki.goog", "dv.acme-v02.test-api.pki.goog", "api.buypass.com", "api.test4.buypass.no", "acme.ssl.com":
		return true
	}
	return false
}

func bindAdvice(err error) string {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return "address in use: stop the server holding it (outrider proxy included) while preflight runs"
	case errors.Is(err, syscall.EACCES):
		return "permission denied: ports below 1024 need root or CAP_NET_BIND_SERVICE"
	}
	return err.Error()
}

// localAddrs returns the IP addresses of this host's interfaces.
func localAddrs() map[string]bool {
	m := map[string]bool{}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			m[n.IP.String()] = true
		}
	}
	return m
}

// selfSigned makes a throwaway certificate for the temporary TLS listener.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "outrider preflight"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
