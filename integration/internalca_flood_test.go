package integration

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// Issue #16: with --tls-internal and no --domain, 300 random server names
// from one client used to take every slot of the internal CA, and then a
// legitimate new name was refused. Now the flood is rate-limited per client
// address and logged, and a new name from another client is served.
func TestInternalCAFloodOfNamesDoesNotLockOutNewName(t *testing.T) {
	skipShort(t)
	t.Parallel()
	storage := t.TempDir()
	app := startApp(t)
	px := startOutrider(t, "proxy", "--upstream", "http://"+app.addr("addr"), "--storage", storage, "--tls-internal",
		"--listen", "127.0.0.1:0", "--http-listen", "", "--admin-listen", "127.0.0.1:0")
	roots, _ := rootFromCLI(t, storage)
	addr := px.addr("https_addr")
	hello := func(from, name string) error {
		d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: name, RootCAs: roots})
		if err == nil {
			c.Close()
		}
		return err
	}
	served, start := 0, time.Now()
	for i := range 300 {
		if hello("127.0.0.1", fmt.Sprintf("flood-%d.example.test", i)) == nil {
			served++
		}
	}
	took := time.Since(start)
	t.Logf("flood of 300 names from 127.0.0.1 in %v: %d served", took.Round(time.Millisecond), served)
	// The burst of 16, and one more per 5 s the flood lasted.
	if most := 16 + int(took/(5*time.Second)); served > most {
		t.Errorf("%d of 300 flood names got a certificate; want at most the per-client burst, %d", served, most)
	}
	if err := hello("127.0.0.2", "legit.example.test"); err != nil {
		t.Errorf("a legitimate new name from another client after the flood: %v", err)
	}
	line := px.waitLog(5*time.Second, "internal CA refused a name")
	if !strings.Contains(line, "rate_limited") {
		t.Errorf("refusal log line %q does not say why", line)
	}
	_, metrics, _ := get(t, plainClient, "http://"+px.addr("admin_addr")+"/metrics")
	if v := metricValue(metrics, `outrider_certs_internal_refusals_total{reason="rate_limited"}`); v < 280 {
		t.Errorf("outrider_certs_internal_refusals_total{reason=\"rate_limited\"} = %v, want the flood's refusals", v)
	}
}
