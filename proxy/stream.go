package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"time"
)

// Streams that outlive a plain request and response: a request body copied
// to the app while its answer is read, and an upgraded connection.

// startSender starts copying the client's body to the app, once. After
// finishSender it does nothing, so that a late 100 Continue timer cannot
// start it.
func (ex *exchange) startSender() {
	ex.senderMu.Lock()
	defer ex.senderMu.Unlock()
	if ex.senderState != senderIdle {
		return
	}
	ex.senderState = senderRunning
	ex.senderDone = make(chan error, 1)
	go func() { ex.senderDone <- ex.sendBody() }()
}

// sendBody copies the body to the app, chunked when its length is unknown,
// flushing after every read so that a streaming upload streams. A failure
// reading the client cuts the app's connection, so that the exchange does
// not wait for an answer to a body that will never be complete.
func (ex *exchange) sendBody() error {
	c, r := ex.c, ex.r
	idle := ex.h.cfg.IdleTimeout
	chunked := r.ContentLength < 0
	var w io.Writer = c.bw
	if chunked {
		w = chunkedWriter{c.bw}
	}
	buf := getBuf()
	defer putBuf(buf)
	var left int64 = r.ContentLength
	for {
		n, rerr := r.Body.Read(buf)
		if n > 0 && !chunked {
			if int64(n) > left {
				n = int(left) // net/http never reads past Content-Length; be sure
			}
			left -= int64(n)
		}
		if n > 0 {
			w.Write(buf[:n])
		}
		if rerr == io.EOF {
			ex.bodyRead.Store(true)
			if chunked {
				chunkedWriter{c.bw}.close(r.Trailer)
			} else if left > 0 {
				rerr = io.ErrUnexpectedEOF
			}
		}
		if rerr != nil && rerr != io.EOF {
			c.nc.SetDeadline(aLongTimeAgo)
			return rerr
		}
		c.nc.SetWriteDeadline(time.Now().Add(idle))
		if err := c.bw.Flush(); err != nil {
			return err
		}
		if rerr == io.EOF {
			return nil
		}
	}
}

// finishSender ends the sender and reports whether the app received the
// whole body, so that its connection can be reused. A sender still running
// when the response is over is cut: the app answered without the rest.
func (ex *exchange) finishSender() bool {
	ex.senderMu.Lock()
	state := ex.senderState
	ex.senderState = senderClosed
	ex.senderMu.Unlock()
	switch state {
	case senderIdle:
		// Never started: fine when there was no body to stream; when the
		// app answered an Expect without a 100, its framing is in doubt.
		return !ex.hasBody || ex.small != nil
	case senderClosed:
		return false
	}
	select {
	case err := <-ex.senderDone:
		return err == nil
	default:
	}
	if !ex.bodyRead.Load() {
		ex.rw.dl.SetReadDeadline(aLongTimeAgo) // unblock a read of the client
	}
	ex.c.nc.SetWriteDeadline(aLongTimeAgo)
	<-ex.senderDone
	return false
}

// tunnel serves a 101 Switching Protocols: the client's connection is
// taken over from net/http and joined to the app's until either side
// closes it, or no byte moves in either direction for the idle timeout.
func (ex *exchange) tunnel(head *respHead) {
	if ex.xc != nil {
		ex.tunnelStream(head) // HTTP/2 or HTTP/3: the stream is the tunnel
		return
	}
	h, r, rw, c := ex.h, ex.r, ex.rw, ex.c
	ex.setConn(nil)
	if ex.upgrade == "" || head.upgrade == "" {
		c.nc.SetDeadline(time.Time{})
		h.pool.discard(c)
		h.fail(rw, r, malformed("101 Switching Protocols to a request that asked for no upgrade"))
		return
	}
	client, brw, err := http.NewResponseController(rw.ResponseWriter).Hijack()
	if err != nil {
		h.pool.discard(c)
		h.fail(rw, r, err)
		return
	}
	defer h.pool.discard(c)
	defer client.Close()
	rw.status, rw.headerAt = http.StatusSwitchingProtocols, time.Now()
	c.nc.SetDeadline(time.Time{})
	client.SetDeadline(time.Time{})

	hdr := rw.Header()
	hdr["Connection"] = []string{"Upgrade"}
	hdr["Upgrade"] = []string{head.upgrade}
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	hdr.Write(brw)
	brw.WriteString("\r\n")
	if n := c.br.Buffered(); n > 0 { // what the app sent after its 101
		b, _ := c.br.Peek(n)
		brw.Write(b)
	}
	if err := brw.Flush(); err != nil {
		return
	}
	up := newIdleConn(c.nc, h.cfg.IdleTimeout)
	if n := brw.Reader.Buffered(); n > 0 { // what the client sent after its request
		b, _ := brw.Reader.Peek(n)
		if _, err := up.Write(b); err != nil {
			return
		}
	}
	done := make(chan struct{}, 2)
	pipe := func(dst net.Conn, src io.Reader) {
		buf := getBuf()
		io.CopyBuffer(dst, src, buf)
		putBuf(buf)
		// Half-close where possible, so that the other direction drains.
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
		done <- struct{}{}
	}
	go pipe(up, client)
	go pipe(&bytesCounter{Conn: client, n: &rw.bytes}, up)
	joinPipes(r.Context(), done, func() {
		client.Close()
		c.nc.Close()
	})
}

// joinPipes waits for the two pipes of a tunnel, each of which sends on
// done as it ends: until one has ended (or ctx is done), then a second for
// the other to drain; then cut stops what is left, and it waits for that.
func joinPipes(ctx context.Context, done <-chan struct{}, cut func()) {
	left := 2
	select {
	case <-done:
		left--
	case <-ctx.Done():
	}
	t := time.NewTimer(time.Second)
	select {
	case <-done:
		left--
	case <-t.C:
	}
	t.Stop()
	cut()
	for ; left > 0; left-- {
		<-done
	}
}

// bytesCounter counts what a tunnel sends to the client, for the access log.
type bytesCounter struct {
	net.Conn
	n *int64
}

func (b *bytesCounter) Write(p []byte) (int, error) {
	n, err := b.Conn.Write(p)
	*b.n += int64(n)
	return n, err
}
