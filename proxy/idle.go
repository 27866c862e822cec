package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Idle timeouts, not total ones: a transfer that keeps moving is never cut,
// a silent one is. Go's http.Server only offers whole-request ReadTimeout and
// WriteTimeout, which would cut long uploads and streams, so deadlines are
// re-armed around each read and write instead.

// respWriter records status and size for logs and metrics, and sees that a
// client that stops reading is cut after the idle timeout.
//
// Arming a deadline around every write costs two timer operations per write
// on HTTP/1 and two messages to the connection's serve goroutine (plus a
// closure and a timer) on HTTP/2, and an HTTP/2 stream deadline may not be
// left armed between writes: it resets the stream when it fires, even with
// nothing pending. So while the server runs, a [stallWatch] does it instead:
// each write only stamps its start time, and the watch, ticking every
// idle/8, sets a deadline in the past on any write that has been blocked for
// 7/8 of the idle timeout. A stalled write is thus cut after between 7/8 and
// all of the idle timeout, with no timer touched on the request path. When
// there is no watch (the handler used on its own), each write arms and
// clears a deadline as before.
type respWriter struct {
	http.ResponseWriter
	dl   deadliner // the ResponseWriter's deadlines
	idle time.Duration

	status      int
	bytes       int64
	headerAt    time.Time // when the final response headers were written
	upstreamErr string    // reason the upstream exchange failed, if it did
	body        *idleBody // the request body, nil when there is none

	watch      *stallWatch  // nil: arm a deadline around each write
	writeStart atomic.Int64 // monotonic nanoseconds when the pending write began; 0 when none
	prev, next *respWriter  // in watch's list, under its lock
	shard      uint32       // which of watch's lists
}

// deadliner is what http.ResponseController calls on the writers net/http
// hands to handlers; asserting it directly saves the controller's allocation
// and an Unwrap walk per call.
type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// controllerDeadlines reaches deadlines through http.ResponseController, for
// ResponseWriters that are wrapped.
type controllerDeadlines struct{ rc *http.ResponseController }

func (c controllerDeadlines) SetReadDeadline(t time.Time) error  { return c.rc.SetReadDeadline(t) }
func (c controllerDeadlines) SetWriteDeadline(t time.Time) error { return c.rc.SetWriteDeadline(t) }

func deadlinesOf(w http.ResponseWriter) deadliner {
	if d, ok := w.(deadliner); ok {
		return d
	}
	return controllerDeadlines{http.NewResponseController(w)}
}

var respWriters = sync.Pool{New: func() any { return new(respWriter) }}

// newRespWriter returns a respWriter from the pool; release returns it.
func newRespWriter(w http.ResponseWriter, idle time.Duration) *respWriter {
	rw := respWriters.Get().(*respWriter)
	rw.ResponseWriter, rw.dl, rw.idle = w, deadlinesOf(w), idle
	return rw
}

// release forgets the request and returns rw to the pool. Nothing may use
// rw afterwards: ServeHTTP calls it last, once ReverseProxy has returned.
func (w *respWriter) release() {
	if w.watch != nil {
		w.watch.remove(w)
	}
	*w = respWriter{}
	respWriters.Put(w)
}

func (w *respWriter) WriteHeader(code int) {
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
		w.headerAt = time.Now()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	w.beginWrite()
	n, err := w.ResponseWriter.Write(p)
	w.endWrite()
	w.bytes += int64(n)
	return n, err
}

// FlushError is what http.ResponseController calls to flush.
func (w *respWriter) FlushError() error {
	w.beginWrite()
	var err error
	if f, ok := w.ResponseWriter.(interface{ FlushError() error }); ok {
		err = f.FlushError()
	} else {
		err = http.NewResponseController(w.ResponseWriter).Flush()
	}
	w.endWrite()
	return err
}

func (w *respWriter) beginWrite() {
	if w.watch != nil {
		w.writeStart.Store(nanotime())
		return
	}
	w.dl.SetWriteDeadline(time.Now().Add(w.idle))
}

func (w *respWriter) endWrite() {
	if w.watch != nil {
		w.writeStart.Store(0)
		return
	}
	w.dl.SetWriteDeadline(time.Time{})
}

// Unwrap lets http.ResponseController reach Hijack for upgrades.
func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// epoch anchors nanotime: monotonic, immune to wall-clock steps.
var epoch = time.Now()

// nanotime returns monotonic nanoseconds since epoch, never 0.
func nanotime() int64 { return int64(time.Since(epoch)) + 1 }

// stallWatch cuts response writes blocked for most of the idle timeout; see
// [respWriter]. Writers are kept in sharded intrusive lists, so that adding
// and removing one allocates nothing and rarely contends.
type stallWatch struct {
	idle   time.Duration
	shards [16]struct {
		mu   sync.Mutex
		head *respWriter
		_    [40]byte // one cache line each
	}
	next atomic.Uint32
}

func newStallWatch(idle time.Duration) *stallWatch { return &stallWatch{idle: idle} }

func (s *stallWatch) add(w *respWriter) {
	w.watch = s
	w.shard = s.next.Add(1) % uint32(len(s.shards))
	sh := &s.shards[w.shard]
	sh.mu.Lock()
	w.prev, w.next = nil, sh.head
	if sh.head != nil {
		sh.head.prev = w
	}
	sh.head = w
	sh.mu.Unlock()
}

func (s *stallWatch) remove(w *respWriter) {
	sh := &s.shards[w.shard]
	sh.mu.Lock()
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		sh.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	}
	w.prev, w.next = nil, nil
	sh.mu.Unlock()
}

// run checks every idle/8 until ctx is done.
func (s *stallWatch) run(ctx context.Context) {
	tick := s.idle / 8
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sweep(nanotime() - int64(s.idle-tick))
		}
	}
}

// sweep cuts every write that began before cutoff. Cutting under the shard
// lock keeps the writer from being released meanwhile.
func (s *stallWatch) sweep(cutoff int64) {
	past := time.Unix(1, 0)
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for w := sh.head; w != nil; w = w.next {
			if st := w.writeStart.Load(); st != 0 && st < cutoff {
				// HTTP/1: the connection's pending write fails. HTTP/2: the
				// stream is reset at once.
				w.dl.SetWriteDeadline(past)
			}
		}
		sh.mu.Unlock()
	}
}

// idleBody arms a read deadline around each read of a request body so that
// a client that stalls mid-upload is cut. At the end of the body it clears
// the deadline: HTTP/1 then reads the connection in the background to notice
// a hang-up, which must not time out during a long response. After a failed
// read, or a Close before the end (the app answered early), it leaves a
// deadline armed so that net/http's discarding of the rest is bounded too.
type idleBody struct {
	io.ReadCloser
	dl   deadliner
	idle time.Duration
	done bool
	err  error // the first read error other than io.EOF
}

func (b *idleBody) Read(p []byte) (int, error) {
	if b.done {
		return b.ReadCloser.Read(p)
	}
	b.dl.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		b.done = true
		b.dl.SetReadDeadline(time.Time{})
	case err != nil:
		b.done = true
		b.err = err
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.done = true
	return b.ReadCloser.Close()
}

// timedOut reports whether the client stalled sending the body.
func (b *idleBody) timedOut() bool { return errors.Is(b.err, os.ErrDeadlineExceeded) }

// idleConn wraps a connection to the upstream and closes it (by failing the
// blocked read or write) once no byte has moved in either direction for
// idle. It is what ends a silent WebSocket or SSE stream, whose client side
// is hijacked or waiting, and it also retires idle pooled connections.
//
// Deadlines are armed lazily: each is set to last+idle only when it fires
// (or was never set), never per read or write. A deadline armed earlier is
// never later than last+idle, since last only grows, so it fires no later
// than it should; when it fires early (bytes moved meanwhile) the operation
// is resumed under a deadline re-armed from last. Arming per operation cost
// three timer operations per proxied request.
type idleConn struct {
	net.Conn
	idle time.Duration
	last atomic.Int64 // unix nanoseconds of the last byte moved

	readArmed, writeArmed bool // owned by the one reader / the one writer
}

func newIdleConn(c net.Conn, idle time.Duration) *idleConn {
	ic := &idleConn{Conn: c, idle: idle}
	ic.touch()
	return ic
}

func (c *idleConn) touch() { c.last.Store(time.Now().UnixNano()) }

// expired reports whether idle has passed since the last byte moved, and
// otherwise when it will have.
func (c *idleConn) expired() (bool, time.Time) {
	at := time.Unix(0, c.last.Load()).Add(c.idle)
	return !time.Now().Before(at), at
}

func (c *idleConn) Read(p []byte) (int, error) {
	for {
		if !c.readArmed {
			_, at := c.expired()
			c.Conn.SetReadDeadline(at)
			c.readArmed = true
		}
		n, err := c.Conn.Read(p)
		if n > 0 {
			c.touch()
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			c.readArmed = false
			if dead, _ := c.expired(); !dead && n == 0 {
				continue // bytes moved since the deadline was armed
			}
			if n > 0 {
				return n, nil // the deadline is re-armed on the next read
			}
		}
		return n, err
	}
}

func (c *idleConn) Write(p []byte) (int, error) {
	c.touch()
	written := 0
	for {
		if !c.writeArmed {
			_, at := c.expired()
			c.Conn.SetWriteDeadline(at)
			c.writeArmed = true
		}
		n, err := c.Conn.Write(p[written:])
		written += n
		if n > 0 {
			c.touch()
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			c.writeArmed = false
			if dead, _ := c.expired(); !dead && written < len(p) {
				continue // progress meanwhile: carry on under a fresh deadline
			}
		}
		return written, err
	}
}
