package proxy

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus"
)

// PROXY protocol (HAProxy's, v1 text and v2 binary) lets a load balancer
// that passes TCP through tell us whom the connection is really from. Only
// the peers in Config.ProxyProtocolFrom may send a header; from them it is
// optional (a balancer's own health checks often send none, as Caddy and
// Traefik allow), and when present its source address becomes the
// connection's RemoteAddr, so that X-Forwarded-For, Forwarded, the access
// log, the limits and the client-certificate checks all see the client and
// not the balancer. A header from anyone else refuses the connection.
// Parsing is go-proxyproto's.

// Results of reading a connection's PROXY header, the values of the result
// label of outrider_proxy_proxy_protocol_connections_total.
const (
	ppUsed    = "used"    // a trusted peer sent a header; its address is used
	ppAbsent  = "absent"  // a trusted peer sent none; the peer's own address stands
	ppRefused = "refused" // an untrusted peer sent one; the connection is closed
	ppInvalid = "invalid" // a trusted peer sent a malformed one, or none in time
)

// ppGate decides, per connection, whether a PROXY header is read.
type ppGate struct {
	from    []netip.Prefix
	timeout time.Duration // for a header read before net/http's deadlines apply
	results *prometheus.CounterVec
}

// newPPGate returns nil when no peer may send PROXY protocol: then no
// connection is wrapped and nothing is read ahead.
func newPPGate(from []netip.Prefix, timeout time.Duration, m *metrics) *ppGate {
	if len(from) == 0 {
		return nil
	}
	return &ppGate{from: from, timeout: timeout, results: m.proxyProtocol}
}

// wrap returns c ready to read a PROXY header: one from a trusted peer is
// used, one from anyone else is refused. Nothing is read yet.
func (g *ppGate) wrap(c net.Conn) *proxyproto.Conn {
	policy := proxyproto.REJECT
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil && trusted(g.from, ap.Addr()) {
		policy = proxyproto.USE
	}
	// No header timeout of the library's own: the caller's deadline (the
	// handshake's, or net/http's ReadHeaderTimeout) bounds the read, and the
	// library's would replace it with none once the header is in.
	return proxyproto.NewConn(c, proxyproto.WithPolicy(policy), proxyproto.SetReadHeaderTimeout(0))
}

// read reads pc's header now, counts the result and returns an error when
// the connection must be closed.
func (g *ppGate) read(pc *proxyproto.Conn) error {
	// A zero-length read runs the header step and returns its error, and
	// reads nothing from the connection itself.
	_, err := pc.Read(nil)
	switch {
	case err == nil && pc.ProxyHeader() != nil:
		g.results.WithLabelValues(ppUsed).Inc()
	case err == nil:
		g.results.WithLabelValues(ppAbsent).Inc()
	case errors.Is(err, proxyproto.ErrSuperfluousProxyHeader):
		g.results.WithLabelValues(ppRefused).Inc()
	default:
		g.results.WithLabelValues(ppInvalid).Inc()
	}
	return err
}

// ppListener is the plain-HTTP listener with PROXY protocol. Accept does
// not read: the header is read on the connection's first use, in its own
// goroutine, so that a silent peer cannot stall the accept loop.
type ppListener struct {
	net.Listener
	gate *ppGate
}

func (l *ppListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &ppLazyConn{Conn: l.gate.wrap(c), gate: l.gate}, nil
}

// ppLazyConn reads and counts its PROXY header on first use.
type ppLazyConn struct {
	*proxyproto.Conn
	gate *ppGate
	once sync.Once
	err  error
}

// check runs first thing in net/http's goroutine for the connection (it
// asks RemoteAddr), before net/http arms any deadline: the read gets its own.
func (c *ppLazyConn) check() error {
	c.once.Do(func() {
		c.Conn.SetReadDeadline(time.Now().Add(c.gate.timeout))
		c.err = c.gate.read(c.Conn)
		c.Conn.SetReadDeadline(time.Time{})
	})
	return c.err
}

func (c *ppLazyConn) Read(b []byte) (int, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *ppLazyConn) RemoteAddr() net.Addr {
	c.check()
	return c.Conn.RemoteAddr()
}
