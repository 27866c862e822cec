// Command testapp is the stand-in legacy app the integration tests run as a
// real process: plain HTTP on a loopback address or a unix socket, config
// files from --config-dir reloaded on SIGHUP and POST /-/reload. When ready it
// writes one JSON line {"msg":"listening","addr":…} to stderr.
//
// With TESTAPP_IDLE=1 in its environment it ignores its arguments and waits
// for a signal: the /top tests run it under arbitrary command lines.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/outrider-dev/outrider/internal/legacyapp"
)

func main() {
	if os.Getenv("TESTAPP_IDLE") == "1" {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		return
	}
	listen := flag.String("listen", "127.0.0.1:0", "TCP address")
	unix := flag.String("unix", "", "unix socket path (instead of --listen)")
	configDir := flag.String("config-dir", "", "directory of config files")
	pidfile := flag.String("pidfile", "", "write the pid here")
	workers := flag.Int("workers", 0, "serve at most this many requests at once, as a single-threaded app does (0: no limit); /-/ paths are exempt")
	flag.Parse()

	app := legacyapp.New(*configDir)
	network, addr := "tcp", *listen
	if *unix != "" {
		network, addr = "unix", *unix
		os.Remove(addr)
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testapp: %v\n", err)
		os.Exit(1)
	}
	if *pidfile != "" {
		if err := os.WriteFile(*pidfile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "testapp: %v\n", err)
			os.Exit(1)
		}
	}
	// /-/conns: connections open now, the most ever open at once, and all
	// accepted, so that tests can see how a proxy uses the app.
	var mu sync.Mutex
	var open, peak, total int
	mux := http.NewServeMux()
	mux.Handle("/", withWorkers(app, *workers))
	mux.HandleFunc("GET /-/conns", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		json.NewEncoder(w).Encode(map[string]int{"open": open, "peak": peak, "total": total})
	})
	// /-/busy: requests being served now and the most ever at once, for
	// --workers: the peak never exceeds it.
	mux.HandleFunc("GET /-/busy", func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(map[string]int64{"busy": busy.Load(), "peak": busyPeak.Load()})
	})
	// /ws is a real WebSocket endpoint (RFC 6455 over HTTP/1.1, as a legacy
	// app has it): every message comes back prefixed with "echo: ".
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				c.Close(websocket.StatusNormalClosure, "")
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo: "), msg...)); err != nil {
				return
			}
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ConnState: func(_ net.Conn, st http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		switch st {
		case http.StateNew:
			open++
			total++
			peak = max(peak, open)
		case http.StateClosed, http.StateHijacked:
			open--
		}
	}}
	go srv.Serve(ln)
	json.NewEncoder(os.Stderr).Encode(map[string]string{"msg": "listening", "addr": ln.Addr().String()})

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	for s := range sig {
		if s == syscall.SIGHUP {
			err := app.Reload()
			json.NewEncoder(os.Stderr).Encode(map[string]any{"msg": "reloaded", "ok": err == nil})
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		srv.Shutdown(ctx)
		cancel()
		return
	}
}

var busy, busyPeak atomic.Int64

// withWorkers lets at most n requests into h at once; the rest wait, as
// they would for the one thread of a legacy app. Waiting starts before the
// body is read, so a slow upload holds its worker throughout.
func withWorkers(h http.Handler, n int) http.Handler {
	var slots chan struct{}
	if n > 0 {
		slots = make(chan struct{}, n)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if slots != nil && !strings.HasPrefix(r.URL.Path, "/-/") {
			select {
			case slots <- struct{}{}:
			case <-r.Context().Done():
				return
			}
			defer func() { <-slots }()
		}
		now := busy.Add(1)
		defer busy.Add(-1)
		for {
			p := busyPeak.Load()
			if now <= p || busyPeak.CompareAndSwap(p, now) {
				break
			}
		}
		h.ServeHTTP(w, r)
	})
}
