package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// The upstream exchange: one HTTP/1.1 request to the app and its response,
// run in the handler's goroutine over a pooled connection. A request body
// of unknown or large size is copied by a second goroutine so that the app
// may answer before it has read it all; everything else is sequential.

const (
	// smallBody: a request body of known length up to this is read whole
	// before the app is contacted, so that a stale keep-alive connection can
	// be retried with it.
	smallBody = 16 << 10
	// expectWait is how long an app is given to answer "Expect:
	// 100-continue" before the body is sent anyway (curl waits 1 s too).
	expectWait = time.Second
)

// aLongTimeAgo is a deadline that has passed: setting it aborts a blocked
// read or write at once.
var aLongTimeAgo = time.Unix(1, 0)

// exchange is the state of one proxied request.
type exchange struct {
	h      *handler
	rw     *respWriter
	r      *http.Request
	host   string // the public host: Host, or the SNI name without one
	target string // origin-form request target as the client sent it

	upgrade string    // protocol the client asks to upgrade to (HTTP/1.1, or extended CONNECT)
	xc      *xconnect // an extended CONNECT's stream; nil for any other request
	expect  bool      // the client sent Expect: 100-continue
	hasBody bool
	small   []byte // the whole body, read ahead; nil when it streams

	// Response state, kept here so that one allocation serves the request.
	head   respHead
	chunks chunkedReader

	mu        sync.Mutex // guards c against abort, which runs on another goroutine
	c         *upConn
	stopAbort func() bool // unhooks abort from the request's context

	// The body sender: a goroutine copying a streaming body to the app.
	senderMu    sync.Mutex
	senderState int        // senderIdle, senderRunning or senderClosed
	senderDone  chan error // the sender's result
	bodyRead    atomic.Bool
}

const (
	senderIdle = iota
	senderRunning
	senderClosed
)

// forward sends the request to the app and relays the answer.
func (h *handler) forward(rw *respWriter, r *http.Request, host, target string) {
	ex := exchange{h: h, rw: rw, r: r, host: host, target: target}
	ex.hasBody = r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	if ex.hasBody {
		ex.expect = expectsContinue(r)
	}
	if r.ProtoMajor == 1 {
		if up := r.Header["Upgrade"]; len(up) > 0 && httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") &&
			!httpguts.HeaderValuesContainsToken(up, "h2c") { // h2c would tunnel past us
			ex.upgrade = up[0]
		}
	}
	// net/http decides after the handler what to do with an unread body
	// by the type of r.Body (an Expect: 100-continue body never asked for
	// closes the connection instead of being read): give it its own back.
	orig := r.Body
	defer func() { r.Body = orig }()
	if err := ex.prepareBody(); err != nil {
		h.fail(rw, r, err)
		return
	}
	defer ex.releaseBody()

	ex.stopAbort = context.AfterFunc(r.Context(), ex.abort)
	defer ex.stopAbort()
	ex.run()
}

// prepareBody wraps the client's body in the idle and size guards and
// reads it ahead when it is small and its length known.
func (ex *exchange) prepareBody() error {
	if !ex.hasBody {
		return nil
	}
	h, r, rw := ex.h, ex.r, ex.rw
	if h.cfg.MaxBodyBytes > 0 {
		// rw.ResponseWriter, not rw: MaxBytesReader tells net/http to
		// close the connection instead of draining an oversized body.
		r.Body = http.MaxBytesReader(rw.ResponseWriter, r.Body, h.cfg.MaxBodyBytes)
	}
	b := &idleBody{ReadCloser: r.Body, dl: rw.dl, idle: h.cfg.IdleTimeout}
	r.Body, rw.body = b, b
	if ex.expect {
		return nil // not a byte is read before the app says 100 Continue
	}
	if n := r.ContentLength; n > 0 && n <= smallBody {
		buf := getBuf()
		if _, err := io.ReadFull(b, buf[:n]); err != nil {
			putBuf(buf)
			return err
		}
		ex.small = buf[:n]
		return nil
	}
	if r.ContentLength < 0 && r.ProtoMajor == 1 {
		// A chunked body: read its first chunk header before the app sees
		// anything, so that a malformed one is a 400 that never reaches
		// the app. Later chunks stream, and a malformed one aborts.
		var one [1]byte
		n, err := b.Read(one[:])
		if err != nil && err != io.EOF {
			return err
		}
		if n == 0 {
			ex.small = []byte{} // empty: sent with Content-Length: 0
			return nil
		}
		r.Body = &prefetched{idleBody: b, first: one[0]}
	}
	return nil
}

func (ex *exchange) releaseBody() {
	if ex.small != nil && cap(ex.small) == copyBufferSize {
		putBuf(ex.small)
	}
}

// replayable reports whether the request can be sent again after a failure
// before any response byte, the mark of a keep-alive connection the app
// had just closed: it is idempotent (RFC 9110 §9.2.2) or carries an
// Idempotency-Key, and nothing of its body was consumed but what is held
// in small. A POST without a key is never sent twice: the app may have
// acted on it before failing.
func (ex *exchange) replayable() bool {
	if ex.hasBody && ex.small == nil {
		return false
	}
	switch ex.r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return len(ex.r.Header["Idempotency-Key"]) > 0
}

// run makes the exchange, retrying once on a fresh connection when a reused
// one fails before the app has answered anything.
func (ex *exchange) run() {
	h, r := ex.h, ex.r
	deadline := time.Now().Add(h.cfg.UpstreamTimeout)
	for attempt := 0; ; attempt++ {
		c, err := h.pool.get(r.Context(), deadline, attempt > 0)
		if err != nil {
			h.fail(ex.rw, r, err)
			return
		}
		ex.setConn(c)
		head, err := ex.roundTrip(deadline)
		if err != nil {
			if ex.hasBody && ex.small == nil {
				ex.finishSender() // stop a body still streaming to the failed connection
			}
			ex.setConn(nil)
			h.pool.discard(c)
			if stale(err) && c.reused && attempt == 0 && ex.replayable() && r.Context().Err() == nil {
				h.metrics.retries.Inc()
				continue
			}
			h.fail(ex.rw, r, err)
			return
		}
		ex.relay(head)
		return
	}
}

func (ex *exchange) setConn(c *upConn) {
	ex.mu.Lock()
	ex.c = c
	ex.mu.Unlock()
}

// abort runs when the client goes away: a blocked read or write on the
// app's connection fails at once.
func (ex *exchange) abort() {
	ex.mu.Lock()
	if ex.c != nil {
		ex.c.nc.SetDeadline(aLongTimeAgo)
	}
	ex.mu.Unlock()
}

// stale reports whether err is what a keep-alive connection the app had
// already closed gives: EOF or a reset before any response byte.
func stale(err error) bool {
	var se *staleError
	return errors.As(err, &se)
}

// hangUp reports whether err is the app closing or resetting the connection.
func hangUp(err error) bool {
	return err == io.EOF || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// staleError marks a failure before the first response byte.
type staleError struct{ err error }

func (e *staleError) Error() string { return e.err.Error() }
func (e *staleError) Unwrap() error { return e.err }

// roundTrip writes the request and reads up to the final response head,
// relaying interim responses. It returns with the head parsed into the
// client's header map.
func (ex *exchange) roundTrip(deadline time.Time) (*respHead, error) {
	c, r := ex.c, ex.r
	// Before the sender starts: a sender that fails at once cuts the
	// connection with a deadline in the past, which this must not undo.
	c.nc.SetReadDeadline(deadline)
	ex.writeHead(c.bw)
	switch {
	case ex.small != nil:
		c.bw.Write(ex.small)
	case ex.hasBody && !ex.expect:
		ex.startSender() // it flushes the head with the body's first bytes
	}
	if !ex.hasBody || ex.small != nil || ex.expect {
		if err := c.bw.Flush(); err != nil {
			if hangUp(err) {
				err = &staleError{err}
			}
			return nil, err
		}
	}
	var expectTimer *time.Timer
	if ex.expect {
		expectTimer = time.AfterFunc(expectWait, ex.startSender)
		defer expectTimer.Stop()
	}
	head := &ex.head
	hb := headBufs.Get().(*[headBufSize]byte)
	defer headBufs.Put(hb)
	scratch := hb[:0]
	for interim := 0; ; interim++ {
		raw, err := readHeadBytes(c.br, scratch[:0])
		if err != nil {
			if interim == 0 && len(raw) == 0 && hangUp(err) {
				err = &staleError{err} // nothing came: the app had closed it
			}
			return nil, err
		}
		scratch = raw
		dst := ex.rw.Header()
		if isInterim(raw) {
			dst = http.Header{} // not the client's headers
		}
		if err := parseHead(raw, head, dst); err != nil {
			clear(ex.rw.Header())
			return nil, err
		}
		if head.code >= 200 || head.code == http.StatusSwitchingProtocols {
			return head, nil
		}
		if interim == maxInterim {
			return nil, malformed("more than %d interim responses", maxInterim)
		}
		if head.code == http.StatusContinue {
			if ex.expect {
				ex.startSender() // reading the client's body sends its 100 Continue
			}
			continue
		}
		if r.ProtoAtLeast(1, 1) {
			// 102, 103 Early Hints and the like go to the client as they are.
			hdr := ex.rw.Header()
			for k, v := range head.header {
				hdr[k] = v
			}
			ex.rw.WriteHeader(head.code)
			clear(hdr)
		}
	}
}

// writeHead writes the request line and headers for the app.
func (ex *exchange) writeHead(w *bufio.Writer) {
	h, r := ex.h, ex.r
	w.WriteString(r.Method)
	w.WriteByte(' ')
	w.WriteString(h.up.URL.Path) // a path prefix from --upstream, or ""
	w.WriteString(ex.target)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(ex.host)
	w.WriteString("\r\n")

	var dropped []string // named in the client's Connection header
	if conn := r.Header["Connection"]; len(conn) > 0 {
		for _, v := range conn {
			forEachToken(v, func(tok string) { dropped = append(dropped, canonicalKey(tok)) })
		}
	}
	keepUnderscore := h.cfg.KeepUnderscoreHeaders
	for k, vv := range r.Header {
		if skipRequestHeader(k) || !keepUnderscore && indexByte(k, '_') >= 0 {
			continue
		}
		if k == "Destination" && h.cfg.Rewrites.Destination && len(vv) == 1 {
			w.WriteString("Destination: ")
			w.WriteString(rewriteDestination(vv[0], ex.host))
			w.WriteString("\r\n")
			continue
		}
		if len(dropped) > 0 && contains(dropped, k) {
			continue
		}
		for _, v := range vv {
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(v)
			w.WriteString("\r\n")
		}
	}
	client, ip, v6 := clientIP(r.RemoteAddr)
	writeForwarded(w, r.Header, ip, v6, ex.host, len(h.cfg.TrustedProxies) > 0 && trusted(h.cfg.TrustedProxies, client))
	if httpguts.HeaderValuesContainsToken(r.Header["Te"], "trailers") {
		w.WriteString("Te: trailers\r\n")
	}
	switch {
	case ex.small != nil:
		w.WriteString("Content-Length: ")
		var num [20]byte
		w.Write(strconv.AppendInt(num[:0], int64(len(ex.small)), 10))
		w.WriteString("\r\n")
	case !ex.hasBody:
		if r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
			w.WriteString("Content-Length: 0\r\n")
		}
	case r.ContentLength > 0:
		w.WriteString("Content-Length: ")
		var num [20]byte
		w.Write(strconv.AppendInt(num[:0], r.ContentLength, 10))
		w.WriteString("\r\n")
	default:
		w.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if ex.expect {
		w.WriteString("Expect: 100-continue\r\n")
	}
	if ex.upgrade != "" {
		w.WriteString("Connection: Upgrade\r\nUpgrade: ")
		w.WriteString(ex.upgrade)
		w.WriteString("\r\n")
	}
	w.WriteString("\r\n")
}

// skipRequestHeader reports whether a client header is never passed on as
// it is: hop-by-hop fields (RFC 9110 §7.6.1), the framing and forwarding
// fields outrider writes itself.
func skipRequestHeader(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
		"Proxy-Authorization", "Proxy-Authenticate", "Host", "Content-Length", "Expect":
		return true
	}
	return isForwardingHeader(k)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// relay sends the final response to the client and returns the connection
// to the pool when the exchange ended cleanly.
func (ex *exchange) relay(head *respHead) {
	h, r, rw, c := ex.h, ex.r, ex.rw, ex.c
	c.noteResponse(head)
	if head.code == http.StatusSwitchingProtocols || ex.xc != nil && head.code < 300 {
		ex.tunnel(head)
		return
	}
	hdr := rw.Header()
	if h.hsts != "" {
		hdr["Strict-Transport-Security"] = []string{h.hsts}
	}
	rewriteResponse(hdr, h.cfg.Rewrites, ex.host, h.up.URL.Host)
	hasBody := bodyAllowed(r.Method, head.code)
	if head.contentLength >= 0 && (hasBody || r.Method == http.MethodHead) {
		hdr["Content-Length"] = []string{strconv.FormatInt(head.contentLength, 10)}
	}
	rw.WriteHeader(head.code)

	reuse := !head.close
	var err error
	if hasBody {
		err = ex.copyBody(head)
		if head.contentLength < 0 && !head.chunked {
			reuse = false // delimited by the app closing
		}
	}
	senderOK := ex.finishSender()
	ex.setConn(nil)
	// A client gone at the last moment has had the connection's deadlines
	// set in the past: it cannot go back to the pool then.
	aborted := !ex.stopAbort()
	if err != nil || !senderOK || aborted {
		// Mid-body failure, a body the app did not wait for, or one it
		// never asked for: the connection's framing is in doubt.
		h.pool.discard(c)
	} else {
		h.pool.put(c, reuse)
	}
	if err != nil {
		code, reason := classify(err, r, rw.body)
		rw.upstreamErr = reason
		h.metrics.upstreamErrors.WithLabelValues(reason).Inc()
		if reason != reasonCanceled {
			h.log.Warn("upstream error after the response began", "reason", reason, "status", code,
				"method", r.Method, "path", r.URL.Path, "upstream", h.up.Address, "err", err)
		}
		panic(http.ErrAbortHandler) // the client must see a cut, not a clean end
	}
}

// copyBody streams the response body straight from the app connection's
// read buffer to the client, flushing whenever the app has nothing more
// buffered, so that streams and events arrive as sent.
func (ex *exchange) copyBody(head *respHead) error {
	c, rw := ex.c, ex.rw
	var chunks *chunkedReader
	left := head.contentLength // -1: until the app closes (or chunked)
	if head.chunked {
		ex.chunks = chunkedReader{br: c.br}
		chunks = &ex.chunks
	}
	idle := ex.h.cfg.IdleTimeout
	for {
		if chunks != nil && chunks.left == 0 {
			if c.br.Buffered() == 0 && !chunks.done {
				if err := ex.beforeBlocking(idle); err != nil {
					return err
				}
			}
			if chunks.done {
				break
			}
			if err := chunks.nextChunk(); err != nil {
				return err
			}
			if chunks.done {
				break
			}
			continue
		}
		if left == 0 {
			break
		}
		if c.br.Buffered() == 0 {
			if err := ex.beforeBlocking(idle); err != nil {
				return err
			}
			if _, err := c.br.Peek(1); err != nil {
				if err == io.EOF && left < 0 && chunks == nil {
					break // delimited by the app closing
				}
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
		}
		n := int64(c.br.Buffered())
		if chunks != nil {
			n = min(n, chunks.left)
		} else if left >= 0 {
			n = min(n, left)
		}
		p, _ := c.br.Peek(int(n))
		if _, err := rw.Write(p); err != nil {
			return clientGone(err)
		}
		c.br.Discard(int(n))
		switch {
		case chunks != nil:
			if chunks.left -= n; chunks.left == 0 {
				if err := chunks.chunkEnd(); err != nil {
					return err
				}
			}
		case left > 0:
			left -= n
		}
	}
	if chunks != nil && chunks.trailer != nil {
		hdr := rw.Header()
		for k, v := range chunks.trailer {
			hdr[http.TrailerPrefix+k] = v
		}
	}
	return nil
}

// beforeBlocking runs when the next body byte has not arrived: what the
// client has been given so far goes out, and the wait is bounded by the
// idle timeout.
func (ex *exchange) beforeBlocking(idle time.Duration) error {
	if err := ex.rw.FlushError(); err != nil {
		return clientGone(err)
	}
	ex.c.nc.SetReadDeadline(time.Now().Add(idle))
	return nil
}

// clientGone marks a write error to the client, so that classify sees the
// client, not the app, as the party that failed.
func clientGone(err error) error { return &clientError{err} }

type clientError struct{ err error }

func (e *clientError) Error() string { return "writing to client: " + e.err.Error() }
func (e *clientError) Unwrap() error { return e.err }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// expectsContinue reports whether the client waits for 100 Continue before
// sending its body. Over HTTP/2 net/http removes the Expect header and
// keeps the fact in its request body; it is read from there.
func expectsContinue(r *http.Request) bool {
	if r.ProtoMajor == 1 {
		return r.ProtoAtLeast(1, 1) && httpguts.HeaderValuesContainsToken(r.Header["Expect"], "100-continue")
	}
	v := reflect.ValueOf(r.Body)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return false
	}
	f := v.Elem().FieldByName("needsContinue")
	return f.IsValid() && f.Kind() == reflect.Bool && f.Bool()
}

// prefetched is an idleBody whose first byte was read ahead.
type prefetched struct {
	*idleBody
	first    byte
	consumed bool
}

func (p *prefetched) Read(b []byte) (int, error) {
	if !p.consumed && len(b) > 0 {
		p.consumed = true
		b[0] = p.first
		return 1, nil
	}
	return p.idleBody.Read(b)
}

// headBufs hold a response head while it is parsed: most are well under
// 4 KiB; a larger one grows a slice of its own.
const headBufSize = 4 << 10

var headBufs = sync.Pool{New: func() any { return new([headBufSize]byte) }}

// Copy buffers, pooled as *[copyBufferSize]byte: a pointer to an array
// converts to and from a slice without allocating.
const copyBufferSize = 32 << 10

var buffers = sync.Pool{New: func() any { return new([copyBufferSize]byte) }}

func getBuf() []byte { return buffers.Get().(*[copyBufferSize]byte)[:] }

func putBuf(b []byte) {
	if cap(b) >= copyBufferSize {
		buffers.Put((*[copyBufferSize]byte)(b[:copyBufferSize]))
	}
}
