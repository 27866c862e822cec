package proxy

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Two limits protect an app that cannot protect itself: a cap on requests at
// the app at once (MaxInflight, with a bounded FIFO queue in front of it)
// and a rate per client address (RateLimit). Both sit on the HTTPS listener
// only; the admin listener is never limited.

// Reasons a request was shed, the values of the reason label of
// outrider_proxy_shed_requests_total.
const (
	shedRate         = "rate_limit"    // over --rate-limit: 429
	shedQueueFull    = "queue_full"    // maxQueued already waiting: 503
	shedQueueTimeout = "queue_timeout" // no slot within --queue-timeout: 503
	shedCanceled     = "canceled"      // the client left while queued: 499, nothing sent
)

// maxQueued bounds the requests waiting for an inflight slot; beyond it a
// request gets 503 at once, so that waiting requests cannot pile up without
// end (as the upstream pool's own waiters are bounded).
const maxQueued = 1024

// inflight caps the requests at the app at once. Waiters queue in arrival
// order: a goroutine blocked sending on a channel is woken first in, first
// out.
type inflight struct {
	slots   chan struct{}
	waiting atomic.Int64
	timeout time.Duration
}

func newInflight(n int, timeout time.Duration) *inflight {
	return &inflight{slots: make(chan struct{}, n), timeout: timeout}
}

// acquire takes a slot, waiting up to the queue timeout. It returns "" with
// a slot held, or the shed reason.
func (l *inflight) acquire(ctx context.Context) string {
	select {
	case l.slots <- struct{}{}:
		return ""
	default:
	}
	if l.waiting.Add(1) > maxQueued {
		l.waiting.Add(-1)
		return shedQueueFull
	}
	defer l.waiting.Add(-1)
	t := time.NewTimer(l.timeout)
	defer t.Stop()
	select {
	case l.slots <- struct{}{}:
		return ""
	case <-t.C:
		return shedQueueTimeout
	case <-ctx.Done():
		return shedCanceled
	}
}

func (l *inflight) release() { <-l.slots }

// Rate limiting is GCRA (the generic cell rate algorithm, a token bucket
// kept as one number): each client address has a theoretical arrival time
// (TAT); a request is admitted when TAT-now stays within the burst, and
// pushes TAT one interval further. A client whose TAT has passed is in the
// same state as one never seen, so its entry can be dropped at no cost:
// that is what keeps memory bounded.
//
// The table holds at most rateClients addresses in rateShards shards, each
// a map of 16-byte keys to an int64 (no pointers for the collector to
// scan): about 50 bytes an address, 3.3 MiB when full (measured). A full shard
// first drops every expired entry (at most once per burst window), and if
// still full forgets one live client at random, which is then admitted as
// if new: the table fails open for a few, never closed for all. Evictions
// of live clients are counted, so that an operator sees when the table is
// too small for the traffic.
const (
	rateShards     = 64
	rateClients    = 1 << 16
	rateShardLimit = rateClients / rateShards
)

type rateLimiter struct {
	interval  int64 // nanoseconds per request at the limit
	tolerance int64 // burst × interval
	now       func() int64
	evicted   func() // counts a live client forgotten for room

	shards [rateShards]rateShard
}

type rateShard struct {
	mu        sync.Mutex
	tat       map[[16]byte]int64
	lastSweep int64
	_         [32]byte // keep neighbouring shards' locks off one cache line
}

// newRateLimiter admits perSecond requests a second per client with bursts
// of burst. now returns monotonic nanoseconds.
func newRateLimiter(perSecond float64, burst int, now func() int64, evicted func()) *rateLimiter {
	interval := int64(math.Max(1, float64(time.Second)/perSecond))
	l := &rateLimiter{interval: interval, tolerance: interval * int64(burst), now: now, evicted: evicted}
	for i := range l.shards {
		l.shards[i].tat = make(map[[16]byte]int64)
	}
	return l
}

// allow reports whether the client key may make a request now, and if not,
// how long until it may.
func (l *rateLimiter) allow(key [16]byte) (bool, time.Duration) {
	now := l.now()
	s := &l.shards[shardOf(key)]
	s.mu.Lock()
	defer s.mu.Unlock()
	tat, ok := s.tat[key]
	if !ok || tat < now {
		tat = now
	}
	next := tat + l.interval
	if over := next - now - l.tolerance; over > 0 {
		return false, time.Duration(over)
	}
	if !ok && len(s.tat) >= rateShardLimit {
		s.makeRoom(now, l.tolerance, l.evicted)
	}
	s.tat[key] = next
	return true, 0
}

// makeRoom frees at least one entry of a full shard.
func (s *rateShard) makeRoom(now, window int64, evicted func()) {
	if now-s.lastSweep >= window {
		s.lastSweep = now
		for k, tat := range s.tat {
			if tat <= now {
				delete(s.tat, k)
			}
		}
		if len(s.tat) < rateShardLimit {
			return
		}
	}
	for k := range s.tat { // map order is random: a random live client
		delete(s.tat, k)
		evicted()
		return
	}
}

// clients returns how many addresses the table holds.
func (l *rateLimiter) clients() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.tat)
		s.mu.Unlock()
	}
	return n
}

func shardOf(k [16]byte) uint64 {
	var x uint64
	for _, b := range k[8:] {
		x = x<<8 | uint64(b)
	}
	for _, b := range k[:8] {
		x ^= uint64(b)
	}
	return (x * 0x9e3779b97f4a7c15) >> 58 // top 6 bits: 64 shards
}

// rateKey is the client a request counts against: its connection's address
// (the PROXY protocol's, when one was sent), or, when that peer is one of
// trustedProxies, the nearest X-Forwarded-For address that is not. An IPv6
// client counts by its /64, the block one host is usually given, so that
// cycling through its own addresses does not escape the limit.
func rateKey(r *http.Request, trustedProxies []netip.Prefix) [16]byte {
	a, _, _ := clientIP(r.RemoteAddr)
	if len(trustedProxies) > 0 && a.IsValid() && trusted(trustedProxies, a) {
		a = forwardedClient(r.Header["X-Forwarded-For"], trustedProxies, a)
	}
	a = a.Unmap()
	if a.Is6() {
		a = netip.PrefixFrom(a, 64).Masked().Addr()
	}
	return a.As16()
}

// forwardedClient walks X-Forwarded-For from the right (the entries our
// trusted peers appended) to the first address that is not a trusted
// proxy. A malformed entry stops the walk: what lies left of it is the
// client's to forge.
func forwardedClient(xff []string, trustedProxies []netip.Prefix, peer netip.Addr) netip.Addr {
	client := peer
	for i := len(xff) - 1; i >= 0; i-- {
		items := strings.Split(xff[i], ",")
		for j := len(items) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(items[j]))
			if err != nil {
				return client
			}
			client = a.Unmap()
			if !trusted(trustedProxies, client) {
				return client
			}
		}
	}
	return client
}

// retryAfter is d in whole seconds, rounded up, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.FormatInt(max(1, int64(math.Ceil(d.Seconds()))), 10)
}

// Rate is a parsed --rate-limit.
type Rate struct {
	// PerSecond is the sustained rate.
	PerSecond float64
	// Count is the number as written (100 in "100/m"), the default burst.
	Count float64
}

// ParseRate parses a rate such as "100/s", "600/m" or "5" (per second).
func ParseRate(s string) (Rate, error) {
	num, unit, _ := strings.Cut(strings.TrimSpace(s), "/")
	per := time.Second
	switch unit {
	case "", "s":
	case "m":
		per = time.Minute
	default:
		return Rate{}, fmt.Errorf("invalid rate %q: want a number per second or minute, such as 100/s or 600/m", s)
	}
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || n <= 0 || math.IsInf(n, 0) || math.IsNaN(n) {
		return Rate{}, fmt.Errorf("invalid rate %q: want a positive number per second or minute, such as 100/s or 600/m", s)
	}
	return Rate{PerSecond: n / per.Seconds(), Count: n}, nil
}
