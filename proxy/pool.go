package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// pool holds the keep-alive connections to the app and bounds how many
// exist at once. Idle connections are reused last-in first-out, so that a
// burst's extra connections age out while the busy ones stay warm, and each
// is retired before the app would close it: at the app's Keep-Alive timeout
// less a margin, or after defaultKeepAlive when the app names none.
type pool struct {
	network, addr string
	dialTimeout   time.Duration
	max           int           // connections at once
	wait          time.Duration // how long a refused dial waits for the app (--upstream-wait)
	log           *slog.Logger
	metrics       *metrics

	mu      sync.Mutex
	idle    []*upConn // LIFO: the most recently used last
	open    int       // idle, in use and being dialed
	waiters []chan *upConn

	waiting  atomic.Int32 // requests waiting for the app to listen again
	downAt   atomic.Int64 // unix nanoseconds of the first refused dial of an outage, 0 when up
	dialer   net.Dialer
	bufPools struct{ r, w sync.Pool }
}

// Pool tuning.
const (
	// defaultKeepAlive is how long an idle connection is kept when the app
	// does not say (Keep-Alive: timeout=N). Below the 5 s of Node and
	// Apache, which close without saying so in some configurations.
	defaultKeepAlive = 2 * time.Second
	// keepAliveMargin is taken off the app's own timeout.
	keepAliveMargin = time.Second
	// peekAfter: a connection idle longer than this is checked for a
	// hang-up by the app before it is reused.
	peekAfter = 50 * time.Millisecond
	// maxQueue bounds the requests waiting for a connection or for the
	// app to listen again; past it they are refused at once.
	maxQueue = 1024
	// DefaultMaxUpstreamConns is the default cap on connections to the
	// app: below Apache prefork's 150 workers and Node's default sockets.
	DefaultMaxUpstreamConns = 128
)

// errBusy: every connection is in use and the queue is full.
var errBusy = errors.New("upstream connection queue full")

// upConn is one connection to the app.
type upConn struct {
	nc       net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	pool     *pool
	reused   bool      // has carried a response before: a failure may be a stale keep-alive
	idleAt   time.Time // when it was last put back
	keep     time.Duration
	requests int // left before the app closes it (Keep-Alive: max), -1 unknown
}

func newPool(network, addr string, dialTimeout time.Duration, maxConns int, wait time.Duration, log *slog.Logger, m *metrics) *pool {
	p := &pool{network: network, addr: addr, dialTimeout: dialTimeout, max: maxConns, wait: wait, log: log, metrics: m}
	p.dialer = net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	p.bufPools.r.New = func() any { return bufio.NewReaderSize(nil, 16<<10) }
	p.bufPools.w.New = func() any { return bufio.NewWriterSize(nil, 4<<10) } // heads; bodies pass through
	return p
}

// get returns a connection: an idle one (unless fresh), a new one if fewer
// than max exist, or, waiting until deadline, the next one put back.
func (p *pool) get(ctx context.Context, deadline time.Time, fresh bool) (*upConn, error) {
	now := time.Now()
	p.mu.Lock()
	for n := len(p.idle); n > 0 && !fresh; n = len(p.idle) {
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		if c.fresh(now) {
			p.mu.Unlock()
			return c, nil
		}
		p.open--
		p.mu.Unlock()
		c.destroy()
		p.mu.Lock()
	}
	if fresh && p.open >= p.max && len(p.idle) > 0 {
		// A retry wants a new connection: make room by the oldest idle one.
		old := p.idle[0]
		p.idle = append(p.idle[:0], p.idle[1:]...)
		p.mu.Unlock()
		old.destroy()
		return p.dial(ctx, deadline)
	}
	if p.open < p.max {
		p.open++
		p.mu.Unlock()
		return p.dial(ctx, deadline)
	}
	if len(p.waiters) >= maxQueue {
		p.mu.Unlock()
		return nil, errBusy
	}
	ch := make(chan *upConn, 1)
	p.waiters = append(p.waiters, ch)
	p.mu.Unlock()
	p.metrics.poolWaits.Inc()

	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case c := <-ch:
		return p.handed(ctx, deadline, c)
	case <-t.C:
	case <-ctx.Done():
	}
	p.mu.Lock()
	for i, w := range p.waiters {
		if w == ch {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			p.mu.Unlock()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, &timeoutError{"waiting for a free upstream connection"}
		}
	}
	p.mu.Unlock()
	// Handed something just as we gave up: use it.
	return p.handed(ctx, deadline, <-ch)
}

// handed takes what put gave a waiter: a connection, or nil for the right
// to dial one.
func (p *pool) handed(ctx context.Context, deadline time.Time, c *upConn) (*upConn, error) {
	if c != nil {
		return c, nil
	}
	return p.dial(ctx, deadline)
}

// put returns c after a complete exchange. reuse is false when the
// response or the app asked for the connection to be closed.
func (p *pool) put(c *upConn, reuse bool) {
	if reuse && c.requests == 0 {
		reuse = false
	}
	if !reuse {
		c.destroy()
		p.release()
		return
	}
	c.reused = true
	c.idleAt = time.Now()
	p.mu.Lock()
	if w := p.popWaiter(); w != nil {
		p.mu.Unlock()
		w <- c
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// release gives up a connection's place in the pool, to a waiter first.
func (p *pool) release() {
	p.mu.Lock()
	if w := p.popWaiter(); w != nil {
		p.mu.Unlock()
		w <- nil // the right to dial
		return
	}
	p.open--
	p.mu.Unlock()
}

// popWaiter takes the longest waiter off the queue, or returns nil. p.mu
// must be held.
func (p *pool) popWaiter() chan *upConn {
	if len(p.waiters) == 0 {
		return nil
	}
	w := p.waiters[0]
	p.waiters[0] = nil
	p.waiters = p.waiters[1:]
	return w
}

// discard closes c, which failed or was abandoned mid-exchange.
func (p *pool) discard(c *upConn) {
	c.destroy()
	p.release()
}

// sweep closes idle connections past their keep time, oldest first, so
// that no idle descriptor outlives the app's interest in it.
func (p *pool) sweep(now time.Time) {
	p.mu.Lock()
	var stale []*upConn
	n := 0
	for n < len(p.idle) && !p.idle[n].fresh(now) {
		stale = append(stale, p.idle[n])
		n++
	}
	if n > 0 {
		p.idle = append(p.idle[:0], p.idle[n:]...)
		p.open -= n
	}
	p.mu.Unlock()
	for _, c := range stale {
		c.destroy()
	}
}

// runSweeper sweeps every half second until ctx is done, then closes every
// idle connection.
func (p *pool) runSweeper(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.sweep(time.Now().Add(time.Hour))
			return
		case now := <-t.C:
			p.sweep(now)
		}
	}
}

// fresh reports whether an idle connection may carry another request:
// within its keep time and not hung up by the app.
func (c *upConn) fresh(now time.Time) bool {
	idle := now.Sub(c.idleAt)
	if idle >= c.keep {
		return false
	}
	return idle < peekAfter || !c.hungUp()
}

// hungUp peeks at the socket without blocking: an idle connection with
// anything to read (EOF, a reset or stray bytes) is not reusable.
func (c *upConn) hungUp() bool {
	sc, ok := c.nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	var buf [1]byte
	dead := false
	rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		dead = n > 0 || err == nil || err != syscall.EAGAIN
		return true
	})
	return dead || c.br.Buffered() > 0
}

// noteResponse applies what a response said about the connection's life.
func (c *upConn) noteResponse(h *respHead) {
	if h.keepAlive > 0 {
		c.keep = max(time.Duration(h.keepAlive)*time.Second-keepAliveMargin, time.Duration(h.keepAlive)*time.Second/2)
	}
	if h.keepAliveMax >= 0 {
		c.requests = h.keepAliveMax
	} else if c.requests > 0 {
		c.requests--
	}
}

func (c *upConn) destroy() {
	c.nc.Close()
	p := c.pool
	c.br.Reset(nil)
	c.bw.Reset(nil)
	p.bufPools.r.Put(c.br)
	p.bufPools.w.Put(c.bw)
	c.br, c.bw = nil, nil
}

// dial connects to the app. When the app refuses (it is restarting) and
// --upstream-wait is on, it retries with backoff until the app listens, the
// wait is over, or deadline passes. On failure the pool place is released.
func (p *pool) dial(ctx context.Context, deadline time.Time) (*upConn, error) {
	nc, err := p.dialer.DialContext(ctx, p.network, p.addr)
	if err != nil && p.wait > 0 && refused(err) {
		nc, err = p.dialWaiting(ctx, deadline, err)
	}
	if err != nil {
		p.release()
		return nil, err
	}
	if at := p.downAt.Swap(0); at != 0 {
		p.log.Info("upstream listening again", "upstream", p.addr,
			"down_seconds", time.Since(time.Unix(0, at)).Seconds())
	}
	br := p.bufPools.r.Get().(*bufio.Reader)
	bw := p.bufPools.w.Get().(*bufio.Writer)
	br.Reset(nc)
	bw.Reset(nc)
	return &upConn{nc: nc, br: br, bw: bw, pool: p, keep: defaultKeepAlive, requests: -1}, nil
}

func (p *pool) dialWaiting(ctx context.Context, deadline time.Time, err error) (net.Conn, error) {
	if n := p.waiting.Add(1); n > maxQueue {
		p.waiting.Add(-1)
		p.metrics.restartWaits(waitRefused).Inc()
		return nil, err
	}
	defer p.waiting.Add(-1)
	now := time.Now()
	if p.downAt.CompareAndSwap(0, now.UnixNano()) {
		p.log.Warn("upstream refused connection; holding requests until it listens again",
			"upstream", p.addr, "wait_seconds", p.wait.Seconds(), "err", err)
	}
	until := now.Add(p.wait)
	if deadline.Before(until) {
		until = deadline
	}
	backoff := 10 * time.Millisecond
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		d := min(backoff/2+rand.N(backoff), time.Until(until))
		if d <= 0 {
			p.metrics.restartWaits(waitGaveUp).Inc()
			return nil, err
		}
		t.Reset(d)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
		var nc net.Conn
		nc, err = p.dialer.DialContext(ctx, p.network, p.addr)
		if err == nil {
			p.metrics.restartWaits(waitRecovered).Inc()
			return nc, nil
		}
		if !refused(err) {
			return nil, err
		}
		backoff = min(backoff*2, 200*time.Millisecond)
	}
}

// refused reports whether a dial failed because nothing listens at the
// address: the app is down or restarting.
func refused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
}

// timeoutError is a net.Error that reports a timeout.
type timeoutError struct{ what string }

func (e *timeoutError) Error() string   { return fmt.Sprintf("timeout %s", e.what) }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }
