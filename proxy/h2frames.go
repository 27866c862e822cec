package proxy

import (
	"errors"
	"log/slog"
	"net"
	"time"
)

// h2Conn is an HTTP/2 client connection after its handshake. net/http's
// HTTP/2 server reads its frames through it (handed over as prior-knowledge
// HTTP/2 on a connection that is not a *tls.Conn, since the TLS is already
// done), and h2Conn watches the frame headers go by for frames that carry
// nothing (CVE-2019-9518): empty DATA without END_STREAM, empty HEADERS or
// CONTINUATION without END_HEADERS, and zero-increment WINDOW_UPDATE. Each
// costs the server as much as a real frame and none has a use; more than
// emptyFrameLimit within emptyFrameWindow closes the connection, like the
// rapid-reset guard. Only frame headers are parsed: payloads are skipped.
type h2Conn struct {
	net.Conn              // the *tls.Conn
	tracked  *trackedConn // the connection below TLS, for --max-conns
	log      *slog.Logger
	metrics  *metrics

	preface int     // bytes of the client preface checked so far
	skip    int     // bytes of a payload still to pass over
	hdr     [9]byte // a frame header being read
	hdrN    int
	wu      [4]byte // a WINDOW_UPDATE payload being read
	wuN     int
	wuLeft  bool

	windowStart time.Time
	empty       int
	cut         bool
}

const (
	emptyFrameLimit  = 1000
	emptyFrameWindow = 10 * time.Second
)

var errEmptyFrames = errors.New("too many empty HTTP/2 frames")

func newH2Conn(c net.Conn, tracked *trackedConn, log *slog.Logger, m *metrics) *h2Conn {
	return &h2Conn{Conn: c, tracked: tracked, log: log, metrics: m}
}

func (c *h2Conn) Read(p []byte) (int, error) {
	if c.cut {
		return 0, errEmptyFrames
	}
	n, err := c.Conn.Read(p)
	if n == 0 {
		return n, err
	}
	switch c.scan(p[:n]) {
	case scanBadPreface:
		// Handed over as prior-knowledge HTTP/2, a connection without the
		// preface would be read as HTTP/1: it was negotiated as h2, so it
		// is a protocol error (RFC 9113 §3.4), and closed.
		c.cut = true
		c.Conn.Close()
		return 0, errBadPreface
	case scanTooManyEmpty:
		c.cut = true
		c.metrics.emptyFrameCloses.Inc()
		c.log.Warn("closing connection: too many empty HTTP/2 frames (CVE-2019-9518)", "remote_addr", c.RemoteAddr().String())
		c.Conn.Close()
		return 0, errEmptyFrames
	}
	return n, err
}

type scanResult int

const (
	scanOK scanResult = iota
	scanBadPreface
	scanTooManyEmpty
)

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

var errBadPreface = errors.New("invalid HTTP/2 connection preface")

// scan follows the frame headers in b and reports whether the connection
// must be closed.
func (c *h2Conn) scan(b []byte) scanResult {
	for c.preface < len(h2Preface) && len(b) > 0 {
		if b[0] != h2Preface[c.preface] {
			return scanBadPreface
		}
		c.preface++
		b = b[1:]
	}
	for len(b) > 0 {
		if c.skip > 0 {
			n := min(c.skip, len(b))
			c.skip -= n
			b = b[n:]
			continue
		}
		if c.wuLeft {
			n := copy(c.wu[c.wuN:], b)
			c.wuN += n
			b = b[n:]
			if c.wuN < len(c.wu) {
				return scanOK
			}
			c.wuLeft, c.wuN = false, 0
			if (uint32(c.wu[0])&0x7f)<<24|uint32(c.wu[1])<<16|uint32(c.wu[2])<<8|uint32(c.wu[3]) == 0 && c.noteEmpty() {
				return scanTooManyEmpty
			}
			continue
		}
		n := copy(c.hdr[c.hdrN:], b)
		c.hdrN += n
		b = b[n:]
		if c.hdrN < len(c.hdr) {
			return scanOK
		}
		c.hdrN = 0
		length := int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
		typ, flags := c.hdr[3], c.hdr[4]
		const (
			frameData, frameHeaders, frameWindowUpdate, frameContinuation = 0x0, 0x1, 0x8, 0x9
			flagEndStream, flagEndHeaders                                 = 0x1, 0x4
		)
		empty := false
		switch typ {
		case frameData:
			empty = length == 0 && flags&flagEndStream == 0
		case frameHeaders, frameContinuation:
			empty = length == 0 && flags&flagEndHeaders == 0
		case frameWindowUpdate:
			if length == 4 {
				c.wuLeft, length = true, 0
			}
		}
		if empty && c.noteEmpty() {
			return scanTooManyEmpty
		}
		c.skip = length
	}
	return scanOK
}

// noteEmpty counts an empty frame and reports whether the limit is passed.
func (c *h2Conn) noteEmpty() bool {
	now := time.Now()
	if now.Sub(c.windowStart) > emptyFrameWindow {
		c.windowStart, c.empty = now, 0
	}
	c.empty++
	return c.empty > emptyFrameLimit
}
