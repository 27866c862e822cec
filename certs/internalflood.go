package certs

import (
	"container/list"
	"crypto/tls"
	"log/slog"
	"net"
	"sync"
	"time"
)

// The internal CA without Domains issues a leaf for whatever name a client
// asks for. A flood of random names must not lock out the names that
// matter (issue #16): leaves are kept in a bounded cache that evicts the
// least recently served first, so a new name always gets one; issuing a
// name not in the cache costs the client address a token of a bucket that
// refills slowly, so one client cannot churn the cache nor burn CPU; and
// refusals are counted and logged, the log lines themselves rate-limited.

// leafCache keeps the most recently served on-demand leaves. Not safe for
// concurrent use; internalSource.mu guards it.
type leafCache struct {
	max   int
	order *list.List // of *cachedLeaf, most recently served first
	items map[string]*list.Element
}

type cachedLeaf struct {
	name string
	cert *tls.Certificate
}

func newLeafCache(max int) *leafCache {
	return &leafCache{max: max, order: list.New(), items: map[string]*list.Element{}}
}

// get returns the leaf for name, or nil, and marks it most recently served.
func (c *leafCache) get(name string) *tls.Certificate {
	e := c.items[name]
	if e == nil {
		return nil
	}
	c.order.MoveToFront(e)
	return e.Value.(*cachedLeaf).cert
}

// put stores the leaf for name and returns the names evicted to make room.
func (c *leafCache) put(name string, cert *tls.Certificate) (evicted []string) {
	if e := c.items[name]; e != nil {
		e.Value.(*cachedLeaf).cert = cert
		c.order.MoveToFront(e)
		return nil
	}
	c.items[name] = c.order.PushFront(&cachedLeaf{name: name, cert: cert})
	for c.order.Len() > c.max {
		old := c.order.Remove(c.order.Back()).(*cachedLeaf)
		delete(c.items, old.name)
		evicted = append(evicted, old.name)
	}
	return evicted
}

// removeExpired drops the leaves expired at now and returns their names.
func (c *leafCache) removeExpired(now time.Time) (removed []string) {
	for e := c.order.Front(); e != nil; {
		next := e.Next()
		if l := e.Value.(*cachedLeaf); now.After(l.cert.Leaf.NotAfter) {
			c.order.Remove(e)
			delete(c.items, l.name)
			removed = append(removed, l.name)
		}
		e = next
	}
	return removed
}

func (c *leafCache) clear() {
	c.order.Init()
	clear(c.items)
}

// issueLimiter is a token bucket per client address: burst new names at
// once, then one per interval. It keeps at most maxClients buckets,
// dropping full (idle) ones first, then the least recently used. Not safe
// for concurrent use; internalSource.mu guards it.
type issueLimiter struct {
	burst    float64
	interval time.Duration
	buckets  map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

const maxClients = 4096

func newIssueLimiter(burst int, interval time.Duration) *issueLimiter {
	return &issueLimiter{burst: float64(burst), interval: interval, buckets: map[string]*bucket{}}
}

// allow reports whether client may have one more new name now, and takes
// the token if so.
func (l *issueLimiter) allow(client string, now time.Time) bool {
	b := l.buckets[client]
	if b == nil {
		if len(l.buckets) >= maxClients {
			l.prune(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[client] = b
	}
	b.tokens = min(l.burst, b.tokens+float64(now.Sub(b.last))/float64(l.interval))
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// prune drops the buckets that have refilled (they hold no state worth
// keeping), and if none has, the least recently used one.
func (l *issueLimiter) prune(now time.Time) {
	var oldest string
	for c, b := range l.buckets {
		if b.tokens+float64(now.Sub(b.last))/float64(l.interval) >= l.burst {
			delete(l.buckets, c)
		} else if oldest == "" || b.last.Before(l.buckets[oldest].last) {
			oldest = c
		}
	}
	if len(l.buckets) >= maxClients {
		delete(l.buckets, oldest)
	}
}

// clientKey names the client of a handshake for the limiter: its IP
// address, or its /64 for IPv6, where one host holds many addresses.
func clientKey(hello *tls.ClientHelloInfo) string {
	if hello == nil || hello.Conn == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(hello.Conn.RemoteAddr().String())
	if err != nil {
		return hello.Conn.RemoteAddr().String()
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.To4() != nil {
		return host
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// Reasons a name is refused, the values of the reason label of
// internal_refusals_total.
const (
	refusedNotAllowed  = "not_allowed"  // not among Domains, nor matching a *. pattern
	refusedInvalid     = "invalid_name" // not a host name or IP address
	refusedRateLimited = "rate_limited" // the client asked for too many new names
)

// refusalLog logs refusals, at most a burst of 10 lines and then one a
// second, and says in the next line how many it left out.
type refusalLog struct {
	mu         sync.Mutex
	log        *slog.Logger
	tokens     float64
	last       time.Time
	suppressed int
}

func (r *refusalLog) refused(now time.Time, name, client, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last.IsZero() {
		r.tokens = 10
	} else {
		r.tokens = min(10, r.tokens+now.Sub(r.last).Seconds())
	}
	r.last = now
	if r.tokens < 1 {
		r.suppressed++
		return
	}
	r.tokens--
	r.log.Warn("internal CA refused a name", "domain", name, "remote_addr", client, "reason", reason, "suppressed", r.suppressed)
	r.suppressed = 0
}
