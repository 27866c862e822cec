package integration

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Issue #12: with native sidecars the kubelet stops the app before the
// proxy. The app's preStop calls the proxy's /drain, which must answer only
// once the proxy has stopped taking requests and finished those in flight,
// while the proxy keeps serving through the delay and stays up (probes)
// until its own SIGTERM.
func TestDrainBeforeTheAppStops(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t)
	slow := getAsync(e.h2, "https://app.example/slow?delay=1s")
	e.waitAppSaw(t, "/slow")
	drained := getAsync(plainClient, "http://"+e.admin+"/drain?delay=500ms")
	e.px.waitLog(10*time.Second, "drain requested")
	if code, _, _ := get(t, plainClient, "http://"+e.admin+"/readyz"); code != 503 {
		t.Errorf("/readyz during the drain delay = %d, want 503", code)
	}
	// Through the delay, new connections are still served (load balancers
	// that have not seen the endpoint removal yet).
	if code, _, _ := get(t, clientFor(e.https, e.ca.Pool(), false), "https://app.example/echo"); code != 200 {
		t.Errorf("a new request during the delay = %d, want 200", code)
	}

	d, s := <-drained, <-slow
	if d.err != nil || d.code != 200 || d.body != "drained\n" {
		t.Fatalf("/drain = %d %q %v, want 200 drained", d.code, d.body, d.err)
	}
	if s.err != nil || s.code != 200 || s.at.After(d.at) {
		t.Errorf("in-flight request: %d %v at %v, /drain answered at %v; want it done before /drain answers", s.code, s.err, s.at, d.at)
	}
	if c, err := net.DialTimeout("tcp", e.https, time.Second); err == nil {
		c.Close()
		t.Error("new connection accepted after /drain answered")
	}
	// Still alive for the kubelet's probes until its own SIGTERM.
	if code, _, _ := get(t, plainClient, "http://"+e.admin+"/healthz"); code != 200 {
		t.Errorf("/healthz after the drain = %d, want 200", code)
	}
	e.px.waitLog(5*time.Second, "drained; waiting for SIGTERM")
	e.px.stop() // exit 0
}

// /drain cannot be undone, so it is refused with a bad delay.
func TestDrainRefusesBadDelay(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t)
	for _, q := range []string{"delay=forever", "delay=2h", "delay=-1s"} {
		code, body, _ := get(t, plainClient, "http://"+e.admin+"/drain?"+q)
		if code != http.StatusBadRequest || !strings.Contains(body, "want a duration") {
			t.Errorf("/drain?%s = %d %q, want 400", q, code, body)
		}
	}
	if code, _, _ := get(t, plainClient, "http://"+e.admin+"/readyz"); code != 200 {
		t.Errorf("/readyz after refused drains = %d, want 200", code)
	}
}
