package main

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// drainer is the proxy's admin /drain, for a preStop hook of the app's
// container. With Kubernetes native sidecars the kubelet stops the app
// first and the proxy only after the app has exited, so on its own the
// proxy would keep forwarding requests (new ones from load balancers that
// have not yet seen the endpoint removal, and new requests on open
// keep-alive connections) to an app that is gone: 502s on every rollout.
// The app's preStop calls /drain and waits for it to answer; meanwhile the
// proxy turns /readyz 503, keeps serving for the delay (while endpoints
// are removed everywhere), then stops accepting, closes idle keep-alive
// connections, lets in-flight requests finish within --shutdown-timeout,
// and answers. Only then does the kubelet signal the app. The proxy itself
// exits on its own SIGTERM, after the app.
type drainer struct {
	req  chan time.Duration // buffered 1: a drain was asked, with its delay
	done chan struct{}      // closed once the services have stopped
	once sync.Once
}

// drainDelayDefault and drainDelayMax bound the ?delay= of /drain.
const (
	drainDelayDefault = 5 * time.Second
	drainDelayMax     = time.Minute
)

func newDrainer() *drainer {
	return &drainer{req: make(chan time.Duration, 1), done: make(chan struct{})}
}

// finished marks the services stopped; safe to call more than once.
func (d *drainer) finished() { d.once.Do(func() { close(d.done) }) }

// ServeHTTP answers GET or POST /drain[?delay=5s] from loopback only: the
// admin listener may be reachable from the pod network for the kubelet's
// probes, and a drain cannot be undone.
func (d *drainer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err != nil || !ap.Addr().Unmap().IsLoopback() {
		http.Error(w, "/drain is answered on loopback only (a preStop exec in the pod)", http.StatusForbidden)
		return
	}
	delay := drainDelayDefault
	if v := r.URL.Query().Get("delay"); v != "" {
		dl, err := time.ParseDuration(v)
		if err != nil || dl < 0 || dl > drainDelayMax {
			http.Error(w, fmt.Sprintf("delay=%q: want a duration from 0s to %v", v, drainDelayMax), http.StatusBadRequest)
			return
		}
		delay = dl
	}
	select {
	case d.req <- delay:
	default: // a drain is under way already: wait for it
	}
	select {
	case <-d.done:
		io.WriteString(w, "drained\n")
	case <-r.Context().Done():
	}
}
