package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// dnsEnv is outrider getting certificates by DNS-01 from a Pebble whose
// validator resolves through a knot serving the zone corp.example.
type dnsEnv struct {
	t    *testing.T
	knot *knot
	peb  *pebble
	px   *proc
	// ready is when outrider logged ready.
	ready time.Time
}

const dnsZone = "corp.example"

// startDNS01 starts knot, Pebble resolving through it, the app, and
// outrider with --acme-dns args for domains. Outrider has no plain-HTTP
// listener and its HTTPS port is not the one Pebble dials: DNS-01 is the
// only way its names can be validated.
func startDNS01(t *testing.T, domains []string, dnsArgs func(k *knot) []string) *dnsEnv {
	t.Helper()
	return startDNS01Ports(t, pickPort(t), domains, dnsArgs)
}

// startDNS01Ports is startDNS01 with Pebble's HTTP-01 port given, for a
// test that opens outrider's plain-HTTP listener there.
func startDNS01Ports(t *testing.T, httpPort int, domains []string, dnsArgs func(k *knot) []string) *dnsEnv {
	t.Helper()
	skipShort(t)
	k := startKnot(t, dnsZone)
	peb := startPebble(t, pebbleOpts{DNSServer: k.Addr, HTTPPort: httpPort, TLSPort: pickPort(t)})
	app := startApp(t)
	args := []string{"proxy",
		"--upstream", "http://" + app.addr("addr"),
		"--acme-directory", peb.DirectoryURL,
		"--acme-ca-root", peb.CARootFile,
		"--storage", t.TempDir(),
		"--listen", "127.0.0.1:0", "--http-listen", "",
		"--admin-listen", "127.0.0.1:0",
		"--acme-dns-resolvers", k.Addr,
	}
	for _, d := range domains {
		args = append(args, "--domain", d)
	}
	args = append(args, dnsArgs(k)...)
	px := startOutrider(t, args...)
	return &dnsEnv{t: t, knot: k, peb: peb, px: px, ready: time.Now()}
}

// waitServed waits until a certificate valid for name, chaining to Pebble,
// is served for SNI name.
func (e *dnsEnv) waitServed(timeout time.Duration, name string) {
	e.t.Helper()
	waitFor(e.t, timeout, func() error {
		_, err := servedChain(e.px.addr("https_addr"), name, e.peb.Roots())
		return err
	})
}

// waitNoChallengeRecords waits until no _acme-challenge TXT record is left
// at name's challenge label.
func (e *dnsEnv) waitNoChallengeRecords(name string) {
	e.t.Helper()
	waitFor(e.t, 15*time.Second, func() error {
		if txt := e.knot.TXT("_acme-challenge." + name); len(txt) > 0 {
			return fmt.Errorf("TXT records left at _acme-challenge.%s: %q", name, txt)
		}
		return nil
	})
}

// assertNoSecret fails when the TSIG secret appears in outrider's logs,
// /status or /metrics.
func (e *dnsEnv) assertNoSecret() {
	e.t.Helper()
	admin := "http://" + e.px.addr("admin_addr")
	for where, text := range map[string]string{
		"logs":     e.px.output(),
		"/status":  func() string { _, b, _ := get(e.t, plainClient, admin+"/status"); return b }(),
		"/metrics": func() string { _, b, _ := get(e.t, plainClient, admin+"/metrics"); return b }(),
	} {
		if strings.Contains(text, e.knot.Secret) {
			e.t.Errorf("the TSIG secret appears in %s", where)
		}
	}
}

func TestACMEDNS01WildcardRFC2136(t *testing.T) {
	t.Parallel()
	e := startDNS01(t, []string{"*." + dnsZone, dnsZone}, func(k *knot) []string {
		return []string{"--acme-dns", "rfc2136", "--acme-dns-server", k.Addr, "--acme-dns-tsig-key-file", k.KeyFile}
	})
	e.waitServed(60*time.Second, "app."+dnsZone)
	wildcard := time.Since(e.ready)
	e.waitServed(30*time.Second, dnsZone)
	t.Logf("wildcard certificate served %.1fs after outrider was ready, apex %.1fs", wildcard.Seconds(), time.Since(e.ready).Seconds())
	// The wildcard covers one label only.
	if _, err := servedChain(e.px.addr("https_addr"), "a.b."+dnsZone, e.peb.Roots()); err == nil {
		t.Errorf("a.b.%s verified against the wildcard certificate", dnsZone)
	}
	// Both challenges (wildcard and apex share _acme-challenge.corp.example)
	// were presented and removed through signed updates.
	e.waitNoChallengeRecords(dnsZone)
	if n := e.knot.Updates(); n < 4 {
		t.Errorf("knot applied %d DNS UPDATEs, want at least 4 (two records added, two removed)", n)
	}
	// The name's other records are untouched.
	if out, err := e.knot.dig("A", dnsZone); err != nil || out != "127.0.0.1" {
		t.Errorf("A %s = %q, %v; want 127.0.0.1", dnsZone, out, err)
	}
	e.assertNoSecret()
}

func TestACMEDNS01LeavesIPAddressesToHTTP01(t *testing.T) {
	t.Parallel()
	// DNS-01 cannot prove an address: with --acme-dns on, 127.0.0.1 is
	// still validated over HTTP-01, and the DNS name never is.
	httpPort := pickPort(t)
	e := startDNS01Ports(t, httpPort, []string{"www." + dnsZone, "127.0.0.1"}, func(k *knot) []string {
		return []string{"--acme-dns", "rfc2136", "--acme-dns-server", k.Addr, "--acme-dns-tsig-key-file", k.KeyFile,
			"--http-listen", fmt.Sprintf("127.0.0.1:%d", httpPort)}
	})
	e.waitServed(60*time.Second, "www."+dnsZone)
	e.waitServed(30*time.Second, "127.0.0.1")
	if n := countLines(e.peb.proc, "Attempting to validate w/ HTTP: http://127.0.0.1:"); n == 0 {
		t.Error("Pebble never validated 127.0.0.1 over HTTP-01")
	}
	if n := countLines(e.peb.proc, "Attempting to validate w/ HTTP: http://www."+dnsZone); n != 0 {
		t.Errorf("Pebble validated www.%s over HTTP-01 %d times, want DNS-01 only", dnsZone, n)
	}
	e.waitNoChallengeRecords("www." + dnsZone)
}

func TestACMEDNS01Exec(t *testing.T) {
	t.Parallel()
	skipShort(t)
	knsupdate := needTool(t, "knsupdate")
	dir := t.TempDir()
	hookLog := filepath.Join(dir, "hook.log")
	hook := filepath.Join(dir, "dns-hook")
	e := startDNS01(t, []string{"www." + dnsZone}, func(k *knot) []string {
		keyFile := filepath.Join(dir, "knsupdate.key")
		if err := os.WriteFile(keyFile, []byte(k.KnsupdateKey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		host, port, _ := strings.Cut(k.Addr, ":")
		// The kind of script an operator already has for a DNS API: here
		// nsupdate's Knot twin against the same server.
		script := fmt.Sprintf(`#!/bin/sh
set -eu
echo "$1 $2" >> %s
case "$1" in
present) op="add $2 60" ;;
cleanup) op="delete $2" ;;
*) echo "unknown action $1" >&2; exit 2 ;;
esac
printf 'server %s %s\nzone %s.\nupdate %%s TXT "%%s"\nsend\n' "$op" "$3" | %s -k %s
`, hookLog, host, port, dnsZone, knsupdate, keyFile)
		if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		return []string{"--acme-dns", "exec:" + hook}
	})
	e.waitServed(60*time.Second, "www."+dnsZone)
	e.waitNoChallengeRecords("www." + dnsZone)
	b, _ := os.ReadFile(hookLog)
	want := "present _acme-challenge.www.corp.example.\ncleanup _acme-challenge.www.corp.example.\n"
	if string(b) != want {
		t.Errorf("hook calls:\n%s\nwant:\n%s", b, want)
	}
}
