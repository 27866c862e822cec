package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"
)

// outrider accepts client connections and completes their TLS handshakes
// itself, then hands each to net/http wrapped by its ALPN protocol: an
// HTTP/2 one in an h2Conn (served as prior-knowledge HTTP/2, the TLS being
// done), an HTTP/1 one in an h1Conn. Owning this step is what lets outrider
// see the bytes of either (h1Conn, h2Conn), cap connections (connTracker)
// and count handshakes where they happen.

// acceptTLS accepts on ln until ctx is done or ln is closed, handshaking
// each connection in its own goroutine and pushing it to q.
func (s *Server) acceptTLS(ctx context.Context, ln net.Listener, cfg *tls.Config, q *connQueue) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: wait, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.cfg.Logger.Warn("accept failed; retrying", "err", err, "retry_seconds", backoff.Seconds())
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		tc := s.conns.admit(c)
		if tc == nil {
			s.refusedLog(c)
			c.Close()
			continue
		}
		wg.Go(func() { s.handshake(ctx, tc, cfg, q) })
	}
}

// refusedLog warns, at most once a minute, that connections are refused.
func (s *Server) refusedLog(c net.Conn) {
	now := time.Now().UnixNano()
	if last := s.lastRefusal.Load(); now-last < int64(time.Minute) || !s.lastRefusal.CompareAndSwap(last, now) {
		return
	}
	s.cfg.Logger.Warn("refusing connections: --max-conns reached and none is idle", "max_conns", s.cfg.MaxConns,
		"remote_addr", c.RemoteAddr().String())
}

// handshake runs the TLS handshake within ReadHeaderTimeout (as net/http
// bounds it) and passes the connection on by its ALPN protocol.
func (s *Server) handshake(ctx context.Context, tracked *trackedConn, cfg *tls.Config, q *connQueue) {
	var raw net.Conn = tracked
	raw.SetDeadline(time.Now().Add(s.cfg.ReadHeaderTimeout))
	if s.pp != nil {
		// A PROXY header comes before the ClientHello, within the same
		// deadline; from here on RemoteAddr is the address it carried.
		pc := s.pp.wrap(raw)
		if err := s.pp.read(pc); err != nil {
			s.cfg.Logger.Debug("proxy protocol header refused", "remote_addr", raw.RemoteAddr().String(), "err", err)
			raw.Close()
			return
		}
		raw = pc
	}
	tc := tls.Server(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		s.metrics.handshakeErr.Inc()
		s.cfg.Logger.Debug("tls handshake failed", "remote_addr", raw.RemoteAddr().String(), "err", err)
		if s.trust != nil {
			s.trust.logRefusal(raw.RemoteAddr().String(), err)
		}
		raw.Close()
		return
	}
	raw.SetDeadline(time.Time{})
	switch tc.ConnectionState().NegotiatedProtocol {
	case "h2":
		q.push(newH2Conn(tc, tracked, s.cfg.Logger, s.metrics))
	case "", "http/1.1", "http/1.0":
		q.push(&h1Conn{Conn: tc, tracked: tracked})
	default:
		// acme-tls/1: the handshake itself was the answer.
		tc.Close()
	}
}

// connQueue is a net.Listener that yields the connections pushed to it.
type connQueue struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

// push hands c to the server, or closes it once the queue is closed.
func (q *connQueue) push(c net.Conn) {
	select {
	case q.ch <- c:
	case <-q.done:
		c.Close()
	}
}

// h1Conn is an HTTP/1 client connection after its handshake. It watches
// the bytes net/http reads for a Content-Length header line, so that the
// handler can tell a request that had both Content-Length and
// Transfer-Encoding — net/http frames it by the latter and deletes the
// former before any handler runs — and close the connection after
// answering it, as RFC 9112 §6.3 requires. The mark is sticky for the
// connection: pipelined requests are read ahead of their handlers, so a
// mark that was reset could miss one. A false mark (a body that contains
// the words) only costs a keep-alive.
type h1Conn struct {
	net.Conn
	tracked *trackedConn // the connection below TLS, for --max-conns
	match   int          // bytes of clMarker matched so far
	sawCL   bool         // a Content-Length line has gone by on this connection
}

// clMarker is what a Content-Length header line starts with, after the
// line feed that ends the line before it; matched ignoring case.
const clMarker = "\ncontent-length:"

func (c *h1Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.sawCL && n > 0 {
		c.scan(p[:n])
	}
	return n, err
}

func (c *h1Conn) scan(b []byte) {
	m := c.match
	for _, x := range b {
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		switch {
		case x == clMarker[m]:
			m++
			if m == len(clMarker) {
				c.sawCL = true
				return
			}
		case x == '\n':
			m = 1
		default:
			m = 0
		}
	}
	c.match = m
}

// tlsState returns the TLS state of a connection handed to net/http, which
// net/http does not fill in for one that is not a *tls.Conn.
func tlsState(c net.Conn) *tls.ConnectionState {
	if tc, ok := c.(*tls.Conn); ok {
		st := tc.ConnectionState()
		return &st
	}
	return nil
}
