package proxy

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"io"
	"net/http"
	"time"
)

// Extended CONNECT (RFC 8441 for HTTP/2, RFC 9220 for HTTP/3): a client
// opens a WebSocket as a stream, CONNECT with :protocol websocket, and the
// stream's two directions carry the WebSocket's bytes once the server
// answers 200. The app only speaks HTTP/1.1, so it is asked the HTTP/1.1
// way (GET with Upgrade: websocket and a Sec-WebSocket-Key of our own,
// which HTTP/2 and HTTP/3 clients do not send), and after its 101 the
// stream is joined to the app's connection. There is no hijack: the
// request body is what the client sends, the ResponseWriter (flushed after
// every write) what it receives.

// websocketGUID is RFC 6455's key suffix for Sec-WebSocket-Accept.
const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// xconnect is the extended-CONNECT part of an exchange.
type xconnect struct {
	body   io.ReadCloser // the client's stream, read side
	accept string        // the Sec-WebSocket-Accept the app must answer with
}

// connectProtocol returns the :protocol of an extended CONNECT, or "".
// net/http puts it in the header map under ":protocol"; quic-go's http3
// puts it in r.Proto.
func connectProtocol(r *http.Request) string {
	switch r.ProtoMajor {
	case 2:
		if v := r.Header[":protocol"]; len(v) == 1 {
			return v[0]
		}
	case 3:
		if r.Proto != "HTTP/3.0" {
			return r.Proto
		}
	}
	return ""
}

// forwardExtendedConnect tunnels a WebSocket opened by extended CONNECT
// to the app as an HTTP/1.1 upgrade. Other protocols are answered 501.
func (h *handler) forwardExtendedConnect(rw *respWriter, r *http.Request, host, target, proto string) {
	if !equalFold(proto, "websocket") {
		h.writeError(rw, http.StatusNotImplemented)
		return
	}
	var nonce [16]byte
	rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	sum := sha1.Sum([]byte(key + websocketGUID))

	// The app's request: a GET with no body. The client's request keeps
	// its method for the access log and metrics.
	up := *r
	up.Method = http.MethodGet
	up.Header = r.Header.Clone()
	delete(up.Header, ":protocol")
	up.Header["Sec-Websocket-Key"] = []string{key}
	if len(up.Header["Sec-Websocket-Version"]) == 0 {
		up.Header["Sec-Websocket-Version"] = []string{"13"}
	}
	up.Body, up.ContentLength = http.NoBody, 0
	if r.ProtoMajor == 3 {
		up.Proto = "HTTP/3.0"
		r.Proto = "HTTP/3.0" // the access log's proto, not "websocket"
	}

	ex := exchange{h: h, rw: rw, r: &up, host: host, target: target, upgrade: "websocket",
		xc: &xconnect{body: r.Body, accept: base64.StdEncoding.EncodeToString(sum[:])}}
	ex.stopAbort = context.AfterFunc(r.Context(), ex.abort)
	defer ex.stopAbort()
	ex.run()
}

// tunnelStream joins the client's stream to the app's connection after the
// app's 101, answering the client 200. Any other answer that is not an
// error would tell the client its WebSocket is open when it is not: 502.
func (ex *exchange) tunnelStream(head *respHead) {
	h, r, rw, c := ex.h, ex.r, ex.rw, ex.c
	ex.setConn(nil)
	defer h.pool.discard(c)
	hdr := rw.Header()
	accept := hdr["Sec-Websocket-Accept"]
	if head.code != http.StatusSwitchingProtocols || !equalFold(head.upgrade, "websocket") ||
		len(accept) != 1 || accept[0] != ex.xc.accept {
		clear(hdr)
		h.fail(rw, r, malformed("the app did not switch to websocket (status %d, Upgrade %q)", head.code, head.upgrade))
		return
	}
	delete(hdr, "Sec-Websocket-Accept")
	c.nc.SetDeadline(time.Time{})
	rw.WriteHeader(http.StatusOK)
	if err := rw.FlushError(); err != nil {
		return
	}
	up := newIdleConn(c.nc, h.cfg.IdleTimeout)
	done := make(chan struct{}, 2)
	go func() { // client → app
		buf := getBuf()
		io.CopyBuffer(up, ex.xc.body, buf)
		putBuf(buf)
		if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite() // the client ended its side: so do we, to the app
		} else {
			c.nc.Close()
		}
		done <- struct{}{}
	}()
	go func() { // app → client, what came with the 101 first
		buf := getBuf()
		defer putBuf(buf)
		defer func() { done <- struct{}{} }()
		var src io.Reader = up
		if c.br.Buffered() > 0 {
			src = io.MultiReader(io.LimitReader(c.br, int64(c.br.Buffered())), up)
		}
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if _, werr := rw.Write(buf[:n]); werr != nil {
					return
				}
				if rw.FlushError() != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	joinPipes(r.Context(), done, func() {
		c.nc.Close()
		rw.dl.SetReadDeadline(aLongTimeAgo) // unblock a read of the client's stream
	})
}
