package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// HTTP/3 over QUIC (quic-go) on the UDP port of the HTTPS address. Requests
// take the same path as over TCP: the same handler, certificates, limits,
// access log and metrics (proto="http3").
//
// QUIC's own protections: no 0-RTT (replayable requests); the 3× amplification
// limit before a client's address is validated (quic-go always applies it);
// address validation by Retry when new connections arrive faster than
// quicRetryAbove a second, or from an address that already holds half its
// cap; at most quicConnsPerIP connections per client address and
// http3MaxStreams concurrent requests per connection.
const (
	// http3MaxStreams caps the concurrent request streams of one
	// connection; a client opening more waits for MAX_STREAMS credit.
	http3MaxStreams = 100
	// http3MaxUniStreams: HTTP/3 needs three unidirectional streams
	// (control, QPACK encoder and decoder); a few spare for GREASE.
	http3MaxUniStreams = 16
	// quicConnsPerIP caps the QUIC connections of one client address. A
	// client refused here falls back to HTTP/2 over TCP, as browsers do
	// whenever QUIC fails.
	quicConnsPerIP = 128
	// quicRetryAbove is the rate of new connection attempts a second past
	// which a client must first prove its address with a Retry round trip.
	quicRetryAbove = 128
	// http3Linger is how long shutdown waits, once no request is in
	// flight, for clients to close their connections after GOAWAY.
	http3Linger = time.Second
	// altSvcMaxAge is how long (seconds) a client may remember that HTTP/3
	// is offered.
	altSvcMaxAge = 86400
)

// h3Server is the HTTP/3 side of a Server.
type h3Server struct {
	udp      *net.UDPConn
	tr       *quic.Transport
	ln       *quic.Listener
	srv      *http3.Server
	guard    *quicGuard
	inflight h3Inflight
}

// listenUDP binds the UDP socket for HTTP/3 on the host of cfg.Listen and
// the port the TCP listener has bound, and prepares the Alt-Svc value.
func (s *Server) listenUDP() error {
	host, _, err := net.SplitHostPort(s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("http/3 listener: %w", err)
	}
	port := portOf(s.httpsLn.Addr().String())
	addr, err := net.ResolveUDPAddr("udp", net.JoinHostPort(host, port))
	if err != nil {
		return fmt.Errorf("http/3 listener: %w", err)
	}
	uc, err := net.ListenUDP("udp", addr)
	if err != nil {
		return fmt.Errorf("http/3 listener (UDP): %w", err)
	}
	s.udpConn = uc
	s.handler.altSvc = newAltSvc(port)
	return nil
}

// altSvc builds the Alt-Svc header of HTTP/1.1 and HTTP/2 responses. It
// names the port the client reached, from the request's Host (443 when Host
// names none), not the port outrider bound: behind a load balancer or a
// Kubernetes Service that maps 443 to --listen's 8443, for TCP and UDP
// alike, clients must be sent to UDP 443. The two usual values are built
// once.
type altSvc struct {
	bound          string   // the port outrider bound
	https, atBound []string // for port 443, and for the bound port
}

func newAltSvc(bound string) *altSvc {
	return &altSvc{bound: bound, https: altSvcValue("443"), atBound: altSvcValue(bound)}
}

func altSvcValue(port string) []string {
	return []string{`h3=":` + port + `"; ma=` + strconv.Itoa(altSvcMaxAge)}
}

// forHost returns the header value for a request to host, or nil when its
// port is not a port number.
func (a *altSvc) forHost(host string) []string {
	port := "443"
	if i := strings.LastIndexByte(host, ':'); i >= 0 && strings.IndexByte(host[i:], ']') < 0 {
		port = host[i+1:]
	}
	switch port {
	case "443":
		return a.https
	case a.bound:
		return a.atBound
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || port[0] == '0' || port[0] == '+' {
		return nil
	}
	return altSvcValue(port)
}

// HTTP3Addr returns the bound UDP address of HTTP/3, or "" when it is off.
func (s *Server) HTTP3Addr() string {
	if s.udpConn == nil {
		return ""
	}
	return s.udpConn.LocalAddr().String()
}

// newH3Server builds the QUIC transport, listener and HTTP/3 server on the
// bound UDP socket. tlsCfg is the TCP listener's, so that certificates
// (and their rotation) are the same; only ALPN differs.
func (s *Server) newH3Server(tlsCfg *tls.Config) (*h3Server, error) {
	g := &quicGuard{conns: map[netip.Addr]int{}, metrics: s.metrics}
	tr := &quic.Transport{
		Conn:                s.udpConn,
		VerifySourceAddress: g.verifySource,
		ConnContext:         g.connContext,
	}
	qcfg := &quic.Config{
		MaxIdleTimeout:        s.cfg.IdleTimeout,
		MaxIncomingStreams:    http3MaxStreams,
		MaxIncomingUniStreams: http3MaxUniStreams,
		Allow0RTT:             false,
	}
	ln, err := tr.Listen(http3.ConfigureTLSConfig(tlsCfg), qcfg)
	if err != nil {
		s.udpConn.Close()
		return nil, fmt.Errorf("http/3 listener: %w", err)
	}
	h3 := &h3Server{udp: s.udpConn, tr: tr, ln: ln, guard: g}
	h3.srv = &http3.Server{
		Handler:        &h3Handler{h: s.handler, inflight: &h3.inflight},
		MaxHeaderBytes: s.cfg.MaxHeaderBytes,
		IdleTimeout:    s.cfg.IdleTimeout,
		// No Logger: with one, quic-go builds a debug line's arguments on
		// every request. Without, its rare errors (a handler's panic) go
		// to slog's default logger.
	}
	return h3, nil
}

// serve serves HTTP/3 until shutdown or close.
func (h3 *h3Server) serve() error { return ignoreClosed(h3.srv.ServeListener(h3.ln)) }

// shutdown sends GOAWAY on every connection and waits, until ctx is done,
// for in-flight requests to finish; then it closes every connection and the
// socket. http3.Server.Shutdown alone would wait for every client to close
// its connection, which an idle one need not do until ctx is done.
func (h3 *h3Server) shutdown(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h3.srv.Shutdown(sctx) }()
	var err error
	select {
	case err = <-done: // every client closed its connection
	case <-h3.inflight.drain():
		// Nothing in flight. The last responses may still be on their way
		// (closing a QUIC connection drops unsent stream data), and the
		// clients close their connections once they have them; give them
		// http3Linger to, then close what is left.
		t := time.NewTimer(http3Linger)
		select {
		case <-done:
		case <-t.C:
			cancel()
			<-done
		case <-ctx.Done():
			<-done
		}
		t.Stop()
	case <-ctx.Done():
		err = <-done
	}
	h3.srv.Close()
	h3.ln.Close()
	h3.tr.Close() // it leaves a socket it did not open to us
	h3.udp.Close()
	if h3.inflight.busy() {
		return err
	}
	return nil
}

// h3Handler adapts HTTP/3 requests to the handler.
type h3Handler struct {
	h        *handler
	inflight *h3Inflight
}

func (hh *h3Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hh.inflight.add()
	defer hh.inflight.done()
	if r.ContentLength < 0 && r.Method != http.MethodConnect && len(r.Header["Expect"]) == 0 {
		// HTTP/3 has no way to say "no body" in the headers: the stream's
		// end says it. Wait for the first byte or the end (which a client
		// sends with its headers), so that a GET is not forwarded with a
		// chunked body. An extended CONNECT's stream stays open (it is the
		// tunnel), and an Expect: 100-continue client waits for us.
		peekBody(w, r, hh.h.cfg.ReadHeaderTimeout)
	}
	hh.h.ServeHTTP(w, r)
}

// peekBody reads the first byte of r's body within timeout and replaces
// r.Body: with http.NoBody when the stream ended, else with a reader that
// gives the byte (or the error) back first.
func peekBody(w http.ResponseWriter, r *http.Request, timeout time.Duration) {
	dl, _ := w.(deadliner)
	if dl != nil {
		dl.SetReadDeadline(time.Now().Add(timeout))
	}
	var one [1]byte
	n, err := r.Body.Read(one[:])
	if dl != nil {
		dl.SetReadDeadline(time.Time{})
	}
	if n == 0 && err == io.EOF {
		r.Body, r.ContentLength = http.NoBody, 0
		return
	}
	r.Body = &peekedBody{ReadCloser: r.Body, first: one[0], has: n == 1, err: err}
}

// peekedBody is a body whose first byte, or first error, was read ahead.
type peekedBody struct {
	io.ReadCloser
	first byte
	has   bool
	err   error
}

func (p *peekedBody) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if p.has {
		p.has = false
		b[0] = p.first
		if p.err != nil {
			return 1, p.err
		}
		return 1, nil
	}
	if err := p.err; err != nil {
		return 0, err
	}
	return p.ReadCloser.Read(b)
}

// h3Inflight counts HTTP/3 requests being handled, so that shutdown knows
// when none is left.
type h3Inflight struct {
	mu       sync.Mutex
	n        int
	draining bool
	idle     chan struct{} // closed once draining and n is 0
}

func (f *h3Inflight) add() {
	f.mu.Lock()
	f.n++
	f.mu.Unlock()
}

func (f *h3Inflight) done() {
	f.mu.Lock()
	f.n--
	if f.n == 0 && f.draining && f.idle != nil {
		close(f.idle)
		f.idle = nil
	}
	f.mu.Unlock()
}

// drain returns a channel closed once no request is in flight.
func (f *h3Inflight) drain() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{})
	if f.n == 0 {
		close(ch)
		return ch
	}
	f.draining, f.idle = true, ch
	return ch
}

// busy reports whether requests are still in flight.
func (f *h3Inflight) busy() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n > 0
}

// quicGuard decides which new QUIC connections are accepted, and when a
// client must first prove its address (Retry, RFC 9000 §8.1.2). quic-go
// calls both of its methods from the one goroutine that handles Initial
// packets, in order: verifySource, then (when no Retry was asked for)
// connContext.
type quicGuard struct {
	window  atomic.Int64 // the unix second attempts are counted in
	count   atomic.Int64 // attempts without a token in that second
	mu      sync.Mutex
	conns   map[netip.Addr]int // open (or handshaking) connections per client address
	metrics *metrics
}

// errTooManyQUICConns refuses a connection past quicConnsPerIP.
var errTooManyQUICConns = errors.New("proxy: too many QUIC connections from this address")

// verifySource reports whether a connection attempt without an address
// token gets a Retry: when attempts come faster than quicRetryAbove a
// second (a flood, perhaps of spoofed addresses), or when its address
// already holds half its connection cap, so that a spoofer cannot use up a
// real client's share.
func (g *quicGuard) verifySource(addr net.Addr) bool {
	now := time.Now().Unix()
	if w := g.window.Load(); w != now && g.window.CompareAndSwap(w, now) {
		g.count.Store(0)
	}
	retry := g.count.Add(1) > quicRetryAbove
	if !retry {
		g.mu.Lock()
		retry = g.conns[ipOf(addr)] >= quicConnsPerIP/2
		g.mu.Unlock()
	}
	if retry {
		g.metrics.quicRetries.Inc()
	}
	return retry
}

// connContext admits a new connection unless its address holds
// quicConnsPerIP already, and counts it until it closes.
func (g *quicGuard) connContext(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	ip := ipOf(info.RemoteAddr)
	g.mu.Lock()
	if g.conns[ip] >= quicConnsPerIP {
		g.mu.Unlock()
		g.metrics.quicRefused.Inc()
		return nil, errTooManyQUICConns
	}
	g.conns[ip]++
	g.mu.Unlock()
	g.metrics.openConns.Inc()
	context.AfterFunc(ctx, func() {
		g.metrics.openConns.Dec()
		g.mu.Lock()
		if g.conns[ip]--; g.conns[ip] <= 0 {
			delete(g.conns, ip)
		}
		g.mu.Unlock()
	})
	return ctx, nil
}

func ipOf(a net.Addr) netip.Addr {
	if ua, ok := a.(*net.UDPAddr); ok {
		ip, _ := netip.AddrFromSlice(ua.IP)
		return ip.Unmap()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap.Addr().Unmap()
}
