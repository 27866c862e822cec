package proxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// Idle timeouts, not total ones: a transfer that keeps moving is never cut,
// a silent one is. Go's http.Server only offers whole-request ReadTimeout and
// WriteTimeout, which would cut long uploads and streams, so deadlines are
// re-armed around each read and write instead.

// respWriter records status and size for logs and metrics, and arms a write
// deadline around each write so that a client that stops reading is cut
// after the idle timeout. The deadline is cleared after each write because an
// HTTP/2 stream deadline resets the stream when it fires, even with nothing
// pending.
type respWriter struct {
	http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration

	status      int
	bytes       int64
	headerAt    time.Time // when the final response headers were written
	upstreamErr string    // reason the upstream exchange failed, if it did
	body        *idleBody // the request body, nil when there is none
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
	w.rc.SetWriteDeadline(time.Now().Add(w.idle))
	n, err := w.ResponseWriter.Write(p)
	w.rc.SetWriteDeadline(time.Time{})
	w.bytes += int64(n)
	return n, err
}

// FlushError is what http.ResponseController calls to flush.
func (w *respWriter) FlushError() error {
	w.rc.SetWriteDeadline(time.Now().Add(w.idle))
	err := w.rc.Flush()
	w.rc.SetWriteDeadline(time.Time{})
	return err
}

// Unwrap lets http.ResponseController reach Hijack for upgrades.
func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// idleBody arms a read deadline around each read of a request body so that
// a client that stalls mid-upload is cut. At the end of the body it clears
// the deadline: HTTP/1 then reads the connection in the background to notice
// a hang-up, which must not time out during a long response. After a failed
// read, or a Close before the end (the app answered early), it leaves a
// deadline armed so that net/http's discarding of the rest is bounded too.
type idleBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
	done bool
	err  error // the first read error other than io.EOF
}

func (b *idleBody) Read(p []byte) (int, error) {
	if b.done {
		return b.ReadCloser.Read(p)
	}
	b.rc.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		b.done = true
		b.rc.SetReadDeadline(time.Time{})
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
// blocked read) once no byte has moved in either direction for idle. It is
// what ends a silent WebSocket or SSE stream, whose client side is
// hijacked or waiting, and it also retires idle pooled connections.
type idleConn struct {
	net.Conn
	idle time.Duration
	last atomic.Int64 // unix nanoseconds of the last byte moved
}

func newIdleConn(c net.Conn, idle time.Duration) *idleConn {
	ic := &idleConn{Conn: c, idle: idle}
	ic.touch()
	return ic
}

func (c *idleConn) touch() { c.last.Store(time.Now().UnixNano()) }

func (c *idleConn) Read(p []byte) (int, error) {
	for {
		c.Conn.SetReadDeadline(time.Unix(0, c.last.Load()).Add(c.idle))
		n, err := c.Conn.Read(p)
		if n > 0 {
			c.touch()
		}
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) &&
			time.Since(time.Unix(0, c.last.Load())) < c.idle {
			continue // the other direction moved meanwhile
		}
		return n, err
	}
}

func (c *idleConn) Write(p []byte) (int, error) {
	c.touch()
	c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	n, err := c.Conn.Write(p)
	c.touch()
	return n, err
}
