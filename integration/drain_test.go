package integration

import (
	"fmt"
	"io"
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
	type result struct {
		code int
		body string
		err  error
		at   time.Time
	}
	slow := make(chan result, 1)
	go func() {
		resp, err := e.h2.Get("https://app.example/slow?delay=1s")
		if err != nil {
			slow <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- result{code: resp.StatusCode, body: string(b), at: time.Now()}
	}()
	waitFor(t, 10*time.Second, func() error {
		var seen []struct{ Path string }
		getJSON(t, plainClient, "http://"+e.app.addr("addr")+"/-/seen", &seen)
		for _, s := range seen {
			if s.Path == "/slow" {
				return nil
			}
		}
		return fmt.Errorf("app has not seen /slow")
	})

	drained := make(chan result, 1)
	go func() {
		resp, err := plainClient.Get("http://" + e.admin + "/drain?delay=500ms")
		if err != nil {
			drained <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		drained <- result{code: resp.StatusCode, body: string(b), at: time.Now()}
	}()
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
