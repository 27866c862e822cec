package proxy

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Client connections are capped (--max-conns) so that a flood of idle
// keep-alive connections cannot use up the file descriptors: at the cap, the
// connection idle the longest is closed to make room for the new one, and
// only when none is idle is the new one refused.

// connTracker knows every open client connection and which are idle.
type connTracker struct {
	max     int
	metrics *metrics

	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

func newConnTracker(max int, m *metrics) *connTracker {
	return &connTracker{max: max, metrics: m, conns: map[*trackedConn]struct{}{}}
}

// trackedConn is a client connection as accepted, below TLS.
type trackedConn struct {
	net.Conn
	t         *connTracker
	idleSince atomic.Int64 // unix nanoseconds since it has been idle between requests; 0 when not
	once      sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.conns, c)
		c.t.mu.Unlock()
	})
	return c.Conn.Close()
}

// admit registers a new connection, closing the longest-idle one first when
// the cap is reached. It returns nil when the new one must be refused.
func (t *connTracker) admit(c net.Conn) *trackedConn {
	tc := &trackedConn{Conn: c, t: t}
	t.mu.Lock()
	if len(t.conns) >= t.max {
		var oldest *trackedConn
		for o := range t.conns {
			if s := o.idleSince.Load(); s != 0 && (oldest == nil || s < oldest.idleSince.Load()) {
				oldest = o
			}
		}
		if oldest == nil {
			t.mu.Unlock()
			t.metrics.connsRefused.Inc()
			return nil
		}
		delete(t.conns, oldest)
		t.mu.Unlock()
		oldest.Conn.Close() // its net/http goroutine sees the close and ends
		t.metrics.connsEvicted.Inc()
		t.mu.Lock()
	}
	t.conns[tc] = struct{}{}
	t.mu.Unlock()
	return tc
}

// noteState is called from http.Server.ConnState: it marks a connection
// idle between requests, or busy.
func (t *connTracker) noteState(c net.Conn, st http1State) {
	var tc *trackedConn
	switch c := c.(type) {
	case *h1Conn:
		tc = c.tracked
	case *h2Conn:
		tc = c.tracked
	}
	if tc == nil {
		return
	}
	if st == stateIdle {
		tc.idleSince.Store(time.Now().UnixNano())
	} else {
		tc.idleSince.Store(0)
	}
}

type http1State int

const (
	stateBusy http1State = iota
	stateIdle
)

// DefaultMaxConns derives the connection cap from the file descriptor limit
// (which Go raises to the hard limit at start): the limit less a reserve for
// the app's connections, the other listeners and files.
func DefaultMaxConns(maxUpstreamConns int) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > 1<<30 {
		return 1 << 20
	}
	n := int(lim.Cur)
	reserve := maxUpstreamConns + 256
	if n-reserve < n/2 {
		return max(n/2, 16)
	}
	return n - reserve
}
