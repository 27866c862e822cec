package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
)

// Reasons an upstream exchange failed, the values of the reason label of
// outrider_proxy_upstream_errors_total.
const (
	reasonDial          = "dial"           // the app is not listening: 502
	reasonTimeout       = "timeout"        // no response headers in time: 504
	reasonCanceled      = "canceled"       // the client went away: 499, nothing sent
	reasonClientTimeout = "client_timeout" // the client stalled sending its body: 408
	reasonClientBody    = "client_body"    // the client's body was malformed (400) or too large (413)
	reasonProtocol      = "protocol"       // anything else from the app: 502
	reasonBusy          = "busy"           // every upstream connection in use and the queue full: 503
)

// statusClientClosed is nginx's code for a client that closed the connection
// before the response; it is logged, never sent.
const statusClientClosed = 499

// classify maps an upstream error to a status code and a reason. It is the
// one place that decides what a client sees when the app fails.
// body is the request body wrapper, nil when the request had none.
func classify(err error, r *http.Request, body *idleBody) (int, string) {
	var opErr *net.OpError
	var tooBig *http.MaxBytesError
	var clientErr *clientError
	switch {
	case body != nil && errors.As(body.err, &tooBig):
		return http.StatusRequestEntityTooLarge, reasonClientBody // a chunked body grew past MaxBodyBytes
	case body != nil && body.timedOut():
		return http.StatusRequestTimeout, reasonClientTimeout
	case body != nil && body.err != nil && r.Context().Err() == nil:
		return http.StatusBadRequest, reasonClientBody
	case r.Context().Err() != nil, errors.As(err, &clientErr):
		return statusClientClosed, reasonCanceled
	case errors.Is(err, errBusy):
		return http.StatusServiceUnavailable, reasonBusy
	case errors.As(err, &opErr) && opErr.Op == "dial":
		if opErr.Timeout() {
			return http.StatusGatewayTimeout, reasonTimeout
		}
		return http.StatusBadGateway, reasonDial
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return http.StatusGatewayTimeout, reasonTimeout
	default:
		return http.StatusBadGateway, reasonProtocol
	}
}
