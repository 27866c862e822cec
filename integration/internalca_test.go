package integration

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rootFromCLI runs `outrider ca root --storage dir` and returns its pool.
func rootFromCLI(t *testing.T, storage string) (*x509.CertPool, []byte) {
	t.Helper()
	out, err := exec.Command(bins.outrider, "ca", "root", "--storage", storage).Output()
	if err != nil {
		t.Fatalf("outrider ca root: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(out) {
		t.Fatalf("outrider ca root printed no PEM certificate: %q", out)
	}
	return pool, out
}

func internalLeaf(t *testing.T, addr, name string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{ServerName: name, RootCAs: roots})
	if err != nil {
		t.Fatalf("TLS to %s as %s with the CLI's root: %v", addr, name, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

func TestInternalCAChainsToRootAndIsReused(t *testing.T) {
	skipShort(t)
	t.Parallel()
	storage := t.TempDir()
	app := startApp(t)
	args := []string{"proxy", "--upstream", "http://" + app.addr("addr"), "--storage", storage,
		"--listen", "127.0.0.1:0", "--http-listen", "", "--admin-listen", "127.0.0.1:0"}
	px := startOutrider(t, args...) // no --domain, no --cert: internal CA, any SNI
	roots, rootPEM := rootFromCLI(t, storage)
	leaf := internalLeaf(t, px.addr("https_addr"), "app.internal", roots)
	if leaf.NotAfter.Sub(leaf.NotBefore) > 13*time.Hour {
		t.Errorf("leaf lives %v, want short-lived (12h)", leaf.NotAfter.Sub(leaf.NotBefore))
	}
	c := clientFor(px.addr("https_addr"), roots, true)
	if code, _, _ := get(t, c, "https://localhost/"); code != 200 {
		t.Errorf("GET https://localhost/ = %d, want 200", code)
	}
	for _, f := range []string{"root.key", "intermediate.key"} {
		fi, err := os.Stat(filepath.Join(storage, "outrider", "internal-ca", f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	px.stop()

	px = startOutrider(t, args...)
	_, again := rootFromCLI(t, storage)
	if string(again) != string(rootPEM) {
		t.Error("the root changed across a restart; it must be created once")
	}
	internalLeaf(t, px.addr("https_addr"), "other.internal", roots)
}

func TestInternalCADomainsOnly(t *testing.T) {
	skipShort(t)
	t.Parallel()
	storage := t.TempDir()
	app := startApp(t)
	px := startOutrider(t, "proxy", "--upstream", "http://"+app.addr("addr"), "--storage", storage,
		"--tls-internal", "--domain", "app.test", "--listen", "127.0.0.1:0", "--http-listen", "",
		"--admin-listen", "127.0.0.1:0")
	roots, _ := rootFromCLI(t, storage)
	internalLeaf(t, px.addr("https_addr"), "app.test", roots)
	conn, err := tls.Dial("tcp", px.addr("https_addr"), &tls.Config{ServerName: "other.test", RootCAs: roots})
	if err == nil {
		conn.Close()
		t.Error("a name outside --domain got a certificate")
	}
}

func TestCARootWithoutCAFails(t *testing.T) {
	skipShort(t)
	t.Parallel()
	out, err := exec.Command(bins.outrider, "ca", "root", "--storage", t.TempDir()).CombinedOutput()
	if err == nil {
		t.Fatalf("outrider ca root on empty storage succeeded: %s", out)
	}
	if code := err.(*exec.ExitError).ExitCode(); code != 1 {
		t.Errorf("exit code %d, want 1: %s", code, out)
	}
}

func TestPreflightLoopback(t *testing.T) {
	skipShort(t)
	t.Parallel()
	// A private ACME CA may issue for localhost: a warning, and the port
	// checks decide.
	private := "--acme-directory=https://127.0.0.1:14000/dir"
	out, err := exec.Command(bins.outrider, "preflight", "--domain", "localhost", private,
		"--http-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--http-port", "0", "--https-port", "0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "warn  localhost: localhost names are never issued by a public CA") {
		t.Fatalf("preflight on loopback with a private CA: %v, want a pass with a warning\n%s", err, out)
	}
	// Issue #12: with a public CA (the default, Let's Encrypt) localhost fails.
	out, err = exec.Command(bins.outrider, "preflight", "--domain", "localhost",
		"--http-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--http-port", "0", "--https-port", "0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "FAIL  localhost: localhost names are never issued by a public CA") {
		t.Fatalf("preflight for localhost against Let's Encrypt: %v, want a failure naming the reason\n%s", err, out)
	}
	// Nothing listens on port 1: ordering would fail.
	out, err = exec.Command(bins.outrider, "preflight", "--domain", "localhost", private,
		"--http-listen", "127.0.0.1:0", "--listen", "", "--http-port", "1").CombinedOutput()
	if err == nil {
		t.Fatalf("preflight passed with an unreachable port:\n%s", out)
	}
	t.Logf("preflight output:\n%s", out)
}
