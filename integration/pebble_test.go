package integration

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outrider-dev/outrider/internal/testcert"
)

// Pebble (letsencrypt/pebble v2.10.3, a Go tool in go.mod) is a small ACME
// server for tests. These helpers run it and pebble-challtestsrv (its DNS,
// answering 127.0.0.1 for every name) as real processes.

var pebbleBuild struct {
	once               sync.Once
	pebble, challtestd string
	err                error
}

// buildPebble builds pebble and pebble-challtestsrv once per test binary.
func buildPebble(t *testing.T) (pebble, challtestsrv string) {
	t.Helper()
	pebbleBuild.once.Do(func() {
		dir := bins.dir
		if dir == "" {
			dir = os.TempDir()
		}
		pebbleBuild.pebble = filepath.Join(dir, "pebble")
		pebbleBuild.challtestd = filepath.Join(dir, "pebble-challtestsrv")
		for _, b := range []struct{ out, pkg string }{
			{pebbleBuild.pebble, "github.com/letsencrypt/pebble/v2/cmd/pebble"},
			{pebbleBuild.challtestd, "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv"},
		} {
			out, err := exec.Command("go", "build", "-o", b.out, b.pkg).CombinedOutput()
			if err != nil {
				pebbleBuild.err = fmt.Errorf("building %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	if pebbleBuild.err != nil {
		if inCI() {
			t.Fatal(pebbleBuild.err)
		}
		t.Skip(pebbleBuild.err)
	}
	return pebbleBuild.pebble, pebbleBuild.challtestd
}

// pebbleOpts configure startPebble.
type pebbleOpts struct {
	// HTTPPort and TLSPort are the ports Pebble's validator dials on
	// 127.0.0.1 for HTTP-01 and TLS-ALPN-01: outrider's listeners.
	HTTPPort, TLSPort int
	// Validity of issued certificates (default profile); default 90 days.
	Validity time.Duration
	// DNSServer is the resolver Pebble's validator asks (HOST:PORT), such
	// as a knot serving the test zone for DNS-01. If empty, a
	// pebble-challtestsrv answering 127.0.0.1 for every name.
	DNSServer string
	// Env is added to Pebble's environment (after PEBBLE_VA_NOSLEEP=1
	// PEBBLE_WFE_NONCEREJECT=0), e.g. PEBBLE_WFE_NONCEREJECT=50.
	Env []string
}

// pebble is a running Pebble behind a gate: a TCP forwarder in the test
// process that Block makes refuse connections, so a test can take the CA
// away and bring it back without Pebble losing its state (a restarted
// Pebble has a new root and forgets accounts and orders).
type pebble struct {
	t *testing.T
	// DirectoryURL is the ACME directory, through the gate (for --acme-directory).
	DirectoryURL string
	// CARootFile is the root of Pebble's own HTTPS (for --acme-ca-root).
	CARootFile string
	// RootFile holds the issuing root, fetched from /roots/0.
	RootFile string
	proc     *proc
	gate     *gate
}

// startPebble starts pebble-challtestsrv and Pebble, waits until the
// directory answers, and saves the issuing root.
func startPebble(t *testing.T, opts pebbleOpts) *pebble {
	t.Helper()
	pebbleBin, challBin := buildPebble(t)
	if opts.Validity == 0 {
		opts.Validity = 90 * 24 * time.Hour
	}
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	certFile, keyFile := ca.LeafFiles(t, dir, "127.0.0.1", "localhost")
	caFile := filepath.Join(dir, "pebble-https-root.pem")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	dns := opts.DNSServer
	if dns == "" {
		dns = "127.0.0.1:" + strconv.Itoa(pickPort(t))
		start(t, procSpec{name: "pebble-challtestsrv", bin: challBin, noReady: true, args: []string{
			"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
			"-dnsserver", dns,
			"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
			"-management", "127.0.0.1:" + strconv.Itoa(pickPort(t)),
		}})
	}
	listen := "127.0.0.1:" + strconv.Itoa(pickPort(t))
	mgmt := "127.0.0.1:" + strconv.Itoa(pickPort(t))
	secs := int64(opts.Validity / time.Second)
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress":                  listen,
		"managementListenAddress":        mgmt,
		"certificate":                    certFile,
		"privateKey":                     keyFile,
		"httpPort":                       opts.HTTPPort,
		"tlsPort":                        opts.TLSPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm":                   "ecdsa",
		// Ignored from 2.7 on in favour of profiles; set for older Pebbles.
		"certificateValidityPeriod": secs,
		"profiles": map[string]any{
			"default":    map[string]any{"description": "test default", "validityPeriod": secs},
			"shortlived": map[string]any{"description": "short", "validityPeriod": max(secs/2, 1)},
		},
	}}
	b, _ := json.Marshal(conf)
	confFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(confFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	env := append([]string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"}, opts.Env...)
	// Pebble has no signal handling: SIGINT kills it (exit code -1).
	pr := start(t, procSpec{name: "pebble", bin: pebbleBin, noReady: true, env: env, exitCode: -1,
		args: []string{"-config", confFile, "-dnsserver", dns, "-strict=false"}})
	g := newGate(t, listen)
	p := &pebble{
		t:            t,
		DirectoryURL: "https://" + g.addr + "/dir",
		CARootFile:   caFile,
		RootFile:     filepath.Join(dir, "pebble-issuing-root.pem"),
		proc:         pr,
		gate:         g,
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	defer c.CloseIdleConnections()
	waitStatusCode(t, c, p.DirectoryURL, http.StatusOK)
	resp, err := c.Get("https://" + mgmt + "/roots/0")
	if err != nil {
		t.Fatalf("fetching Pebble root: %v", err)
	}
	defer resp.Body.Close()
	root, _ := io.ReadAll(resp.Body)
	if err := os.WriteFile(p.RootFile, root, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Block makes the ACME server unreachable: new connections are closed at
// once and open ones are cut. Unblock restores it.
func (p *pebble) Block()   { p.gate.setBlocked(true) }
func (p *pebble) Unblock() { p.gate.setBlocked(false) }

// Orders counts the orders Pebble accepted.
func (p *pebble) Orders() int { return countLines(p.proc, "Added order") }

// Roots returns a pool holding Pebble's current issuing root.
func (p *pebble) Roots() *x509.CertPool {
	p.t.Helper()
	b, err := os.ReadFile(p.RootFile)
	if err != nil {
		p.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		p.t.Fatalf("no root in %s", p.RootFile)
	}
	return pool
}

func countLines(pr *proc, substr string) int {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	n := 0
	for _, l := range pr.lines {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// pickPort returns a loopback TCP port free at the time of the call, for
// the few addresses that must be known up front (Pebble's httpPort/tlsPort).
func pickPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// gate forwards TCP connections to a target unless blocked.
type gate struct {
	addr   string
	target string
	mu     sync.Mutex
	closed bool
	block  bool
	conns  map[net.Conn]struct{}
}

func newGate(t *testing.T, target string) *gate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{addr: ln.Addr().String(), target: target, conns: map[net.Conn]struct{}{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go g.forward(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		g.mu.Lock()
		g.closed = true
		g.mu.Unlock()
		g.setBlocked(true)
	})
	return g
}

func (g *gate) setBlocked(b bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.block = b
	if b {
		for c := range g.conns {
			c.Close()
		}
	}
}

func (g *gate) track(cs ...net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.block || g.closed {
		return false
	}
	for _, c := range cs {
		g.conns[c] = struct{}{}
	}
	return true
}

func (g *gate) forward(c net.Conn) {
	defer c.Close()
	up, err := net.DialTimeout("tcp", g.target, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	if !g.track(c, up) {
		return
	}
	defer func() {
		g.mu.Lock()
		delete(g.conns, c)
		delete(g.conns, up)
		g.mu.Unlock()
	}()
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); up.Close(); done <- struct{}{} }()
	go func() { io.Copy(c, up); c.Close(); done <- struct{}{} }()
	<-done
	<-done
}
