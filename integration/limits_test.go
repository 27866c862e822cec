package integration

// Issue #14: --max-inflight with its queue, and --rate-limit per client.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

// appBusy returns the testapp's requests in service now and at most.
func appBusy(t *testing.T, e *proxyEnv) (busy, peak int) {
	t.Helper()
	var v struct{ Busy, Peak int }
	getJSON(t, plainClient, "http://"+e.app.addr("addr")+"/-/busy", &v)
	return v.Busy, v.Peak
}

func TestMaxInflightQueuesThen503(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t, "--max-inflight", "1", "--queue-timeout", "3s")

	// Eight at once against an app that would take them all: outrider lets
	// one at a time through, and every one is answered.
	var g errgroup.Group
	for i := range 8 {
		g.Go(func() error {
			resp, err := e.h2.Get(fmt.Sprintf("https://app.example/slow?delay=50ms&i=%d", i))
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("request %d: %d", i, resp.StatusCode)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if _, peak := appBusy(t, e); peak != 1 {
		t.Errorf("the app served %d requests at once, want 1 (--max-inflight 1)", peak)
	}

	// One that holds the slot past the queue timeout: the next gets 503
	// with Retry-After after waiting 3s, not at once.
	hold := getAsync(e.h1, "https://app.example/slow?delay=6s")
	waitFor(t, 10*time.Second, func() error {
		if busy, _ := appBusy(t, e); busy != 1 {
			return fmt.Errorf("app busy with %d requests, want 1", busy)
		}
		return nil
	})
	start := time.Now()
	resp, err := e.h2.Get("https://app.example/echo")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	waited := time.Since(start)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("queued past --queue-timeout = %d (Retry-After %q), want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if waited < 2500*time.Millisecond {
		t.Errorf("answered after %v, want about the 3s queue timeout", waited)
	}
	if r := <-hold; r.err != nil || r.code != 200 {
		t.Errorf("the request holding the slot = %d %v, want 200", r.code, r.err)
	}
	m := metricsText(t, e.admin)
	if v := metricValue(m, `outrider_proxy_shed_requests_total{reason="queue_timeout"}`); v != 1 {
		t.Errorf("shed_requests_total{queue_timeout} = %v, want 1", v)
	}
	if v := metricValue(m, "outrider_proxy_inflight_requests"); v != 0 {
		t.Errorf("inflight_requests = %v after all finished, want 0", v)
	}
}

func TestRateLimitPerClientAddress(t *testing.T) {
	skipShort(t)
	t.Parallel()
	// 1/m: no request is refilled while the test runs, however slow the
	// machine.
	e := startProxy(t, "--rate-limit", "1/m", "--rate-burst", "3", "--proxy-protocol-from", "127.0.0.1")
	a, b := clientFrom(clientIP, e.https, e), clientFrom(balancerIP, e.https, e)
	code := func(c *http.Client) (int, string) {
		resp, err := c.Get("https://app.example/echo")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	for i := range 3 {
		if c, _ := code(a); c != 200 {
			t.Fatalf("request %d of a burst of 3 = %d", i+1, c)
		}
	}
	if c, ra := code(a); c != 429 || !within(ra, 1, 60) {
		t.Errorf("4th request = %d (Retry-After %q), want 429 with Retry-After of at most 60 seconds", c, ra)
	}
	if c, _ := code(b); c != 200 {
		t.Errorf("another client's first request = %d, want 200", c)
	}
	// The address a PROXY header carries is the one limited: a client at
	// a fresh address behind the balancer has its own burst.
	for i := range 4 {
		_, err := rawTLS(e, "127.0.0.1", "PROXY TCP4 127.7.7.7 127.0.0.1 1000 443\r\n")
		if i < 3 && err != nil {
			t.Fatalf("request %d via PROXY header: %v", i+1, err)
		}
		if i == 3 && (err == nil || err.Error() != "status 429") {
			t.Errorf("4th request from 127.7.7.7 = %v, want status 429", err)
		}
	}
	// The admin listener is never limited.
	for range 10 {
		if c, _, _ := get(t, plainClient, "http://"+e.admin+"/healthz"); c != 200 {
			t.Fatalf("admin /healthz = %d", c)
		}
	}
	m := metricsText(t, e.admin)
	if v := metricValue(m, `outrider_proxy_shed_requests_total{reason="rate_limit"}`); v != 2 {
		t.Errorf("shed_requests_total{rate_limit} = %v, want 2", v)
	}
}

// 100,000 distinct client addresses (carried in X-Forwarded-For from a
// trusted proxy) keep outrider's memory bounded: the rate table holds at
// most 65536 of them.
func TestRateLimit100kAddressesBoundedMemory(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t, "--rate-limit", "1/m", "--rate-burst", "1", "--trusted-proxies", "127.0.0.1", "--access-log=false")
	const n = 100_000
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	heapBefore := metricValue(metricsText(t, e.admin), "go_memstats_heap_inuse_bytes")
	var mu sync.Mutex
	codes := map[int]int{}
	g, gctx := errgroup.WithContext(ctx)
	next := make(chan int)
	g.Go(func() error {
		defer close(next)
		for i := range n {
			select {
			case next <- i:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	start := time.Now()
	for range 16 {
		g.Go(func() error {
			for i := range next {
				ip := "10." + strconv.Itoa(i>>16) + "." + strconv.Itoa(i>>8&255) + "." + strconv.Itoa(i&255)
				req, _ := http.NewRequestWithContext(gctx, http.MethodHead, "https://app.example/", nil)
				req.Header.Set("X-Forwarded-For", ip)
				resp, err := e.h2.Do(req)
				if err != nil {
					return err
				}
				resp.Body.Close()
				mu.Lock()
				codes[resp.StatusCode]++
				mu.Unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	m := metricsText(t, e.admin)
	clients := metricValue(m, "outrider_proxy_rate_limit_clients")
	heapAfter := metricValue(m, "go_memstats_heap_inuse_bytes")
	t.Logf("%d addresses in %v: codes %v, table %v clients, %v live evicted, Go heap in use %.1f → %.1f MiB", n, time.Since(start).Round(time.Millisecond),
		codes, clients, metricValue(m, "outrider_proxy_rate_limit_evictions_total"), heapBefore/(1<<20), heapAfter/(1<<20))
	if codes[200] != n {
		t.Errorf("codes %v: every address's first request should pass", codes)
	}
	if clients > 65536 {
		t.Errorf("rate table holds %v clients, want at most 65536", clients)
	}
	if heapAfter-heapBefore > 64<<20 {
		t.Errorf("Go heap in use grew by %.1f MiB over 100000 addresses, want a bounded few", (heapAfter-heapBefore)/(1<<20))
	}
}

// within reports whether s is a whole number from lo to hi.
func within(s string, lo, hi int) bool {
	n, err := strconv.Atoi(s)
	return err == nil && lo <= n && n <= hi
}
