package integration

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestACMEOnDemandAskRateAndCap(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var asked []string
	ask := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := r.URL.Query().Get("domain")
		mu.Lock()
		if !slices.Contains(asked, d) {
			asked = append(asked, d)
		}
		mu.Unlock()
		if strings.HasPrefix(d, "shop") {
			w.WriteHeader(http.StatusOK)
			return
		}
		http.Error(w, "unknown customer", http.StatusNotFound)
	}))
	t.Cleanup(ask.Close)
	// Two on-demand names at most, one new order a minute.
	e := startACME(t, http01, pebbleOpts{}, "--on-demand-ask", ask.URL+"/allowed",
		"--on-demand-max-names", "2", "--on-demand-rate", "1")
	e.waitServed(30*time.Second, "")
	orders := e.peb.Orders()
	addr := e.px.addr("https_addr")

	// An allowed name is issued at its first handshake.
	began := time.Now()
	waitFor(t, 30*time.Second, func() error {
		_, err := servedChain(addr, "shop1.example", e.peb.Roots())
		return err
	})
	t.Logf("on-demand certificate served %.1fs after the first handshake began", time.Since(began).Seconds())
	if got := e.peb.Orders(); got != orders+1 {
		t.Errorf("Pebble saw %d orders, want %d (one for shop1.example)", got, orders+1)
	}
	handshakeFails := func(name string) {
		t.Helper()
		if leaf, err := servedChain(addr, name, e.peb.Roots()); err == nil {
			t.Errorf("%s: served a valid certificate %v, want the handshake refused", name, leaf.DNSNames)
		}
	}
	// A refused name is never ordered.
	handshakeFails("evil.example")
	// An allowed name beyond the order rate waits for the next minute.
	handshakeFails("shop2.example")
	e.px.waitLog(5*time.Second, `"msg":"on-demand certificate order refused"`)
	// A third name is over the cap: refused without asking.
	handshakeFails("shop3.example")
	e.px.waitLog(5*time.Second, `"msg":"on-demand certificate refused: name cap reached"`)
	if got := e.peb.Orders(); got != orders+1 {
		t.Errorf("Pebble saw %d orders, want still %d", got, orders+1)
	}
	mu.Lock()
	gotAsked := slices.Clone(asked)
	mu.Unlock()
	if want := []string{"shop1.example", "evil.example", "shop2.example"}; !slices.Equal(gotAsked, want) {
		t.Errorf("ask URL was asked about %q, want %q", gotAsked, want)
	}
	for result, min := range map[string]float64{"allowed": 2, "refused": 1, "capped": 1, "rate_limited": 1} {
		if v := e.metric(fmt.Sprintf(`outrider_certs_on_demand_decisions_total{result=%q}`, result)); v < min {
			t.Errorf("on_demand_decisions_total{result=%q} = %v, want >= %v", result, v, min)
		}
	}
	// Refused on-demand names never make the proxy unready, and the
	// issued one is served through it.
	if code, body := e.admin("/readyz"); code != 200 {
		t.Errorf("/readyz = %d %s, want 200", code, body)
	}
	c := clientFor(addr, e.peb.Roots(), true)
	if code, _, _ := get(t, c, "https://shop1.example/"); code != 200 {
		t.Errorf("GET https://shop1.example/ = %d, want 200", code)
	}
}
