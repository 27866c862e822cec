package integration

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// knot is a real authoritative DNS server (Knot DNS, Debian's knot) on a
// loopback port, serving one zone that accepts DNS UPDATEs signed with a
// TSIG key: the DNS-01 tests' DNS provider and Pebble's resolver.
type knot struct {
	t *testing.T
	// Addr is the server's 127.0.0.1:PORT (UDP and TCP).
	Addr string
	// Zone is the zone served, without the trailing dot.
	Zone string
	// KeyFile holds the TSIG key in BIND format (for --acme-dns-tsig-key-file);
	// KnsupdateKey is the same key as knsupdate's -y argument.
	KeyFile, KnsupdateKey string
	// Secret is the TSIG secret, to check that it never leaks.
	Secret string
	proc   *proc
}

// startKnot starts knotd for zone, with an A record 127.0.0.1 at the apex,
// and waits until it answers the zone's SOA.
func startKnot(t *testing.T, zone string) *knot {
	t.Helper()
	skipShort(t)
	knotd := needTool(t, "knotd")
	needTool(t, "kdig")
	dir := t.TempDir()
	raw := make([]byte, 32)
	rand.Read(raw)
	secret := base64.StdEncoding.EncodeToString(raw)
	const keyName = "outrider-test"
	port := pickPort(t) // a TCP port free now; UDP on the same port is free too, almost always
	k := &knot{t: t, Addr: "127.0.0.1:" + strconv.Itoa(port), Zone: zone, Secret: secret,
		KeyFile: filepath.Join(dir, "tsig.key"), KnsupdateKey: "hmac-sha256:" + keyName + ":" + secret}
	conf := fmt.Sprintf(`server:
    listen: 127.0.0.1@%d
    rundir: %[2]s
log:
  - target: stderr
    any: info
database:
    storage: %[2]s
key:
  - id: %[3]s
    algorithm: hmac-sha256
    secret: %[4]s
acl:
  - id: update
    key: %[3]s
    action: update
template:
  - id: default
    storage: %[2]s
    file: "%%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: %[5]s
    acl: update
`, port, dir, keyName, secret, zone)
	zoneText := fmt.Sprintf(`$ORIGIN %s.
$TTL 60
@ SOA ns hostmaster 1 60 60 600 60
@ NS ns
ns A 127.0.0.1
@ A 127.0.0.1
`, zone)
	bindKey := fmt.Sprintf("key \"%s\" {\n\talgorithm hmac-sha256;\n\tsecret \"%s\";\n};\n", keyName, secret)
	for name, body := range map[string]string{"knot.conf": conf, zone + ".zone": zoneText, "tsig.key": bindKey} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	k.proc = start(t, procSpec{name: "knotd", bin: knotd, noReady: true, args: []string{"-c", filepath.Join(dir, "knot.conf")}})
	waitFor(t, 10*time.Second, func() error {
		out, err := k.dig("SOA", zone)
		if err != nil {
			return err
		}
		if !strings.Contains(out, "hostmaster") {
			return fmt.Errorf("no SOA yet: %q", out)
		}
		return nil
	})
	return k
}

// dig asks the server for name's records of type typ and returns kdig's
// short answer (one record a line).
func (k *knot) dig(typ, name string) (string, error) {
	host, port, _ := net.SplitHostPort(k.Addr)
	out, err := exec.Command("kdig", "@"+host, "-p", port, "+short", "+time=2", "+retry=1", typ, name).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("kdig %s %s: %v: %s", typ, name, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// TXT returns the TXT records at name (values unquoted), failing the test
// when the server does not answer.
func (k *knot) TXT(name string) []string {
	k.t.Helper()
	out, err := k.dig("TXT", name)
	if err != nil {
		k.t.Fatal(err)
	}
	var vals []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.Trim(strings.TrimSpace(l), `"`); l != "" {
			vals = append(vals, l)
		}
	}
	return vals
}

// Updates counts the DNS UPDATE messages knot applied (it logs concurrent
// ones as one batch: "DDNS, processing 2 updates").
func (k *knot) Updates() int {
	k.proc.mu.Lock()
	defer k.proc.mu.Unlock()
	n := 0
	for _, l := range k.proc.lines {
		if _, rest, ok := strings.Cut(l, "DDNS, processing "); ok {
			var c int
			if _, err := fmt.Sscanf(rest, "%d", &c); err == nil {
				n += c
			}
		}
	}
	return n
}
