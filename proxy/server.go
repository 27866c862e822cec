package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// Server is the HTTPS-terminating reverse proxy: an HTTPS listener that
// forwards to the upstream (with HTTP/3 on its UDP port when Config.HTTP3),
// and an optional plain-HTTP listener that redirects to it. Use New, then
// Listen, then Serve.
type Server struct {
	cfg     Config
	up      *Upstream
	metrics *metrics
	handler *handler
	pp      *ppGate      // nil: no PROXY protocol
	trust   *clientTrust // nil: no client certificates

	httpsLn, httpLn net.Listener
	conns           *connTracker
	lastRefusal     atomic.Int64 // unix nanoseconds of the last refusal logged
	udpConn         *net.UDPConn // HTTP/3, when on
}

// New validates cfg and builds the server. It opens no sockets.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	up, _ := ParseUpstream(cfg.Upstream, cfg.AllowRemoteUpstream) // checked by Validate
	pages, err := loadErrorPages(cfg.ErrorPages)
	if err != nil {
		return nil, err
	}
	trust, err := newClientTrust(cfg)
	if err != nil {
		return nil, err
	}
	m := newMetrics(cfg.Registerer)
	h := newHandler(cfg, up, m, pages)
	h.shield = newShield(h, cfg, m, trust)
	return &Server{cfg: cfg, up: up, metrics: m, handler: h, trust: trust,
		pp: newPPGate(cfg.ProxyProtocolFrom, cfg.ReadHeaderTimeout, m), conns: newConnTracker(cfg.MaxConns, m)}, nil
}

// Listen binds the HTTPS (TCP, and UDP for HTTP/3) and HTTP addresses, so
// that a port in use is an error before anything is reported ready.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("https listener: %w", err)
	}
	s.httpsLn = ln
	if s.cfg.HTTP3 {
		if err := s.listenUDP(); err != nil {
			s.httpsLn.Close()
			return err
		}
	}
	if s.cfg.HTTPListen != "" {
		ln, err := net.Listen("tcp", s.cfg.HTTPListen)
		if err != nil {
			s.httpsLn.Close()
			if s.udpConn != nil {
				s.udpConn.Close()
			}
			return fmt.Errorf("http listener: %w", err)
		}
		s.httpLn = ln
		if s.pp != nil {
			s.httpLn = &ppListener{Listener: ln, gate: s.pp}
		}
	}
	return nil
}

// Addr returns the bound HTTPS address.
func (s *Server) Addr() string { return addrOf(s.httpsLn) }

// MaxConns returns the cap on client connections in force.
func (s *Server) MaxConns() int { return s.cfg.MaxConns }

// HTTPAddr returns the bound plain-HTTP address, or "" when it is off.
func (s *Server) HTTPAddr() string { return addrOf(s.httpLn) }

func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// CheckUpstream returns nil when the upstream accepts a connection. It is a
// readiness check: it dials, it sends no request the app would log.
func (s *Server) CheckUpstream(ctx context.Context) error {
	d := net.Dialer{Timeout: s.cfg.DialTimeout}
	c, err := d.DialContext(ctx, s.up.Network, s.up.Address)
	if err != nil {
		return fmt.Errorf("upstream %s not answering: %w", s.up.Address, err)
	}
	return c.Close()
}

// Reload re-reads the files the server holds itself (the client CA bundle
// and CRL); on failure the previous ones stay in force.
func (s *Server) Reload(ctx context.Context) error {
	if s.trust == nil {
		return nil
	}
	return s.trust.reload(ctx)
}

// Handler returns the proxying handler, for tests and benchmarks.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves until ctx is done, then stops accepting, lets in-flight
// requests finish within ShutdownTimeout and returns. It returns nil after a
// clean shutdown. Listen must have been called.
func (s *Server) Serve(ctx context.Context) error {
	if s.httpsLn == nil {
		return errors.New("proxy: Serve called before Listen")
	}
	errorLog := log.New(&serverErrorLog{log: s.cfg.Logger, metrics: s.metrics}, "", 0)
	tlsCfg := tlsConfig(s.cfg.GetCertificate, s.cfg.NextProtos, func(tls.ConnectionState) {
		s.metrics.handshakeOK.Inc()
	})
	tlsCfg.GetEncryptedClientHelloKeys = s.cfg.GetEncryptedClientHelloKeys
	tlsCfg.MinVersion = s.cfg.TLSMinVersion
	if s.trust != nil {
		s.trust.configure(tlsCfg)
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	// HTTP/2 connections arrive with their TLS already done, wrapped in an
	// h2Conn: net/http serves them as prior-knowledge HTTP/2.
	protocols.SetUnencryptedHTTP2(true)
	// No TLSConfig: acceptTLS has done the handshakes.
	https := &http.Server{
		Handler:           s.handler,
		Protocols:         &protocols,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ErrorLog:          errorLog,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: 250,
			// Ping a silent connection, and drop it if the ping is not
			// answered: dead peers do not hold streams forever.
			SendPingTimeout: s.cfg.IdleTimeout,
			PingTimeout:     15 * time.Second,
		},
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			ci := &connInfo{conn: c}
			switch c := c.(type) {
			case *h1Conn:
				ci.h1, ci.tls = c, tlsState(c.Conn)
			case *h2Conn:
				ci.tls = tlsState(c.Conn)
			}
			return context.WithValue(ctx, connInfoKey{}, ci)
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				s.metrics.openConns.Inc()
			case http.StateIdle:
				s.conns.noteState(c, stateIdle)
			case http.StateActive:
				s.conns.noteState(c, stateBusy)
			case http.StateClosed, http.StateHijacked:
				s.metrics.openConns.Dec()
			}
		},
	}
	var redirect *http.Server
	if s.httpLn != nil {
		var h http.Handler = &redirectHandler{names: s.handler.names, httpsPort: portOf(s.httpsLn.Addr().String())}
		if s.cfg.WrapHTTP != nil {
			h = s.cfg.WrapHTTP(h)
		}
		h = s.handler.logPlain(h)
		redirect = &http.Server{
			Handler:           h,
			ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       time.Minute,
			MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
			ErrorLog:          errorLog,
		}
	}

	// The stall watch outlives the listeners: it also cuts stalled writes
	// while Shutdown drains.
	watch := newStallWatch(s.cfg.IdleTimeout)
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	watchDone := make(chan struct{})
	go func() { defer close(watchDone); watch.run(watchCtx) }()
	s.handler.watch.Store(watch)
	sweepDone := make(chan struct{})
	go func() { defer close(sweepDone); s.handler.pool.runSweeper(watchCtx) }()
	defer func() {
		s.handler.watch.CompareAndSwap(watch, nil)
		stopWatch()
		<-watchDone
		<-sweepDone
	}()

	var h3 *h3Server
	if s.udpConn != nil {
		var err error
		if h3, err = s.newH3Server(tlsCfg); err != nil {
			return err
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	conns := newConnQueue(s.httpsLn.Addr())
	g.Go(func() error { return ignoreClosed(https.Serve(conns)) })
	g.Go(func() error { return s.acceptTLS(gctx, s.httpsLn, tlsCfg, conns) })
	if s.trust != nil {
		g.Go(func() error { return s.trust.run(gctx) })
	}
	if redirect != nil {
		g.Go(func() error { return ignoreClosed(redirect.Serve(s.httpLn)) })
	}
	if h3 != nil {
		g.Go(h3.serve)
	}
	g.Go(func() error {
		<-gctx.Done()
		s.cfg.Logger.Info("shutting down: waiting for in-flight requests", "timeout_seconds", s.cfg.ShutdownTimeout.Seconds())
		s.httpsLn.Close() // no new connections; https.Shutdown closes the queue
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
		defer cancel()
		var wg sync.WaitGroup
		var errs [3]error
		if h3 != nil {
			wg.Go(func() { errs[2] = h3.shutdown(sctx) })
		}
		for i, srv := range []*http.Server{https, redirect} {
			if srv == nil {
				continue
			}
			wg.Go(func() {
				if err := srv.Shutdown(sctx); err != nil {
					srv.Close()
					errs[i] = err
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs[:]...); err != nil {
			return fmt.Errorf("shutdown: in-flight requests did not finish within %v; closed them", s.cfg.ShutdownTimeout)
		}
		return nil
	})
	return g.Wait()
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// serverErrorLog receives net/http's own error lines. TLS handshake failures
// are counted and logged at debug level (scanners cause many); anything else
// is a warning.
type serverErrorLog struct {
	log     *slog.Logger
	metrics *metrics
}

func (l *serverErrorLog) Write(p []byte) (int, error) {
	msg := string(bytes.TrimSpace(p))
	if bytes.Contains(p, []byte("TLS handshake error")) {
		l.metrics.handshakeErr.Inc()
		l.log.Debug("tls handshake failed", "err", msg)
		return len(p), nil
	}
	l.log.Warn("http server error", "err", msg)
	return len(p), nil
}
