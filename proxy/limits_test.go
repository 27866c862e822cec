package proxy

import (
	"context"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestParseRate(t *testing.T) {
	tests := []struct {
		in        string
		perSecond float64
		count     float64
		wantErr   string
	}{
		{in: "100/s", perSecond: 100, count: 100},
		{in: "600/m", perSecond: 10, count: 600},
		{in: "5", perSecond: 5, count: 5},
		{in: "0.5/s", perSecond: 0.5, count: 0.5},
		{in: "10/h", wantErr: `invalid rate "10/h"`},
		{in: "0/s", wantErr: "positive"},
		{in: "-1", wantErr: "positive"},
		{in: "NaN", wantErr: "positive"},
		{in: "", wantErr: "positive"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRate(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseRate(%q) error = %v, want it to contain %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil || got.PerSecond != tt.perSecond || got.Count != tt.count {
				t.Errorf("ParseRate(%q) = %+v, %v; want %v/s count %v", tt.in, got, err, tt.perSecond, tt.count)
			}
		})
	}
}

func key(s string) [16]byte { return netip.MustParseAddr(s).As16() }

func TestRateLimiterBurstThenRate(t *testing.T) {
	var now int64
	l := newRateLimiter(10, 3, func() int64 { return now }, func() {})
	a, b := key("127.0.0.1"), key("127.0.0.2")
	for i := range 3 {
		if ok, _ := l.allow(a); !ok {
			t.Fatalf("request %d of a burst of 3 refused", i+1)
		}
	}
	ok, wait := l.allow(a)
	if ok || wait != 100*time.Millisecond {
		t.Fatalf("4th request = %v, wait %v; want refused, wait 100ms", ok, wait)
	}
	if ok, _ := l.allow(b); !ok {
		t.Fatal("another client was refused: limits must be per client")
	}
	now += int64(100 * time.Millisecond)
	if ok, _ := l.allow(a); !ok {
		t.Fatal("refused one interval later")
	}
	if ok, _ := l.allow(a); ok {
		t.Fatal("a second request in the same interval was admitted")
	}
	now += int64(time.Hour)
	for i := range 3 {
		if ok, _ := l.allow(a); !ok {
			t.Fatalf("after an idle hour, request %d of a new burst refused", i+1)
		}
	}
}

// The table for 100,000 distinct client addresses stays within rateClients
// entries and a few MiB, whether the clients are idle (expired entries are
// swept) or all live at once (random live ones are forgotten and counted).
func TestRateLimiterMemoryBoundedFor100kAddresses(t *testing.T) {
	for _, tc := range []struct {
		name        string
		step        int64 // clock advance between requests
		wantEvicted bool
	}{
		{"clients that come and go", int64(time.Second), false},
		{"all live at once", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var now int64
			evicted := 0
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			l := newRateLimiter(1, 1, func() int64 { return now }, func() { evicted++ })
			for i := range 100_000 {
				a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
				if ok, _ := l.allow(a.As16()); !ok {
					t.Fatalf("the first request of %v was refused", a)
				}
				now += tc.step
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			n := l.clients()
			t.Logf("100000 addresses: %d held, %d live ones evicted, heap %.2f MiB", n, evicted, float64(heap)/(1<<20))
			if n > rateClients {
				t.Errorf("table holds %d clients, want at most %d", n, rateClients)
			}
			if heap > 8<<20 {
				t.Errorf("table grew the heap by %d bytes, want under 8 MiB", heap)
			}
			if (evicted > 0) != tc.wantEvicted {
				t.Errorf("evicted %d live clients; want evictions %v", evicted, tc.wantEvicted)
			}
			runtime.KeepAlive(l)
		})
	}
}

func TestRateKey(t *testing.T) {
	trustedNet := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	tests := []struct {
		name    string
		remote  string
		xff     []string
		trusted []netip.Prefix
		want    string
	}{
		{name: "direct", remote: "127.0.0.5:1234", want: "127.0.0.5"},
		{name: "xff ignored from untrusted peer", remote: "127.0.0.5:1", xff: []string{"1.2.3.4"}, want: "127.0.0.5"},
		{name: "trusted peer: nearest untrusted", remote: "10.0.0.1:1", xff: []string{"6.6.6.6, 1.2.3.4, 10.0.0.9"}, trusted: trustedNet, want: "1.2.3.4"},
		{name: "two header lines", remote: "10.0.0.1:1", xff: []string{"6.6.6.6", "1.2.3.4"}, trusted: trustedNet, want: "1.2.3.4"},
		{name: "garbage stops the walk", remote: "10.0.0.1:1", xff: []string{"6.6.6.6, junk, 10.0.0.7"}, trusted: trustedNet, want: "10.0.0.7"},
		{name: "no xff from trusted peer", remote: "10.0.0.1:1", trusted: trustedNet, want: "10.0.0.1"},
		{name: "ipv6 by /64", remote: "[2001:db8:1:2:aaaa::1]:443", want: "2001:db8:1:2::"},
		{name: "mapped v4", remote: "[::ffff:127.0.0.9]:443", want: "127.0.0.9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: tt.remote, Header: http.Header{}}
			if tt.xff != nil {
				r.Header["X-Forwarded-For"] = tt.xff
			}
			got := rateKey(r, tt.trusted)
			if want := netip.MustParseAddr(tt.want).As16(); got != want {
				t.Errorf("rateKey(%s, %q) = %v, want %v", tt.remote, tt.xff, netip.AddrFrom16(got).Unmap(), tt.want)
			}
		})
	}
}

func TestInflightQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newInflight(1, 10*time.Second)
		ctx := context.Background()
		if r := l.acquire(ctx); r != "" {
			t.Fatalf("first acquire = %q", r)
		}
		got := make(chan string, 1)
		go func() { got <- l.acquire(ctx) }()
		synctest.Wait()
		if l.waiting.Load() != 1 {
			t.Fatalf("waiting = %d, want 1", l.waiting.Load())
		}
		l.release()
		if r := <-got; r != "" {
			t.Fatalf("queued acquire after release = %q, want a slot", r)
		}
		start := time.Now()
		if r := l.acquire(ctx); r != shedQueueTimeout || time.Since(start) != 10*time.Second {
			t.Fatalf("acquire with no slot = %q after %v, want %q after 10s", r, time.Since(start), shedQueueTimeout)
		}
		cctx, cancel := context.WithCancel(ctx)
		go func() { got <- l.acquire(cctx) }()
		synctest.Wait()
		cancel()
		if r := <-got; r != shedCanceled {
			t.Fatalf("acquire of a client that left = %q, want %q", r, shedCanceled)
		}
		l.waiting.Store(maxQueued)
		if r := l.acquire(ctx); r != shedQueueFull {
			t.Fatalf("acquire with a full queue = %q, want %q", r, shedQueueFull)
		}
	})
}
