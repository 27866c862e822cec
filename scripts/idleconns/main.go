// Command idleconns opens many keep-alive HTTPS connections to a loopback
// address, sends one request on each, and holds them idle, so that the
// server's memory per idle connection can be measured. Loopback only.
//
//	go run ./scripts/idleconns -addr 127.0.0.1:8443 -n 10000 -hold 30s
package main

import (
	"bufio"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "HTTPS `address` (loopback)")
	n := flag.Int("n", 10000, "connections")
	parallel := flag.Int("parallel", 64, "connections opened at once")
	hold := flag.Duration("hold", 30*time.Second, "how long to hold them open after the last one is up")
	flag.Parse()
	host, _, err := net.SplitHostPort(*addr)
	if err != nil || !net.ParseIP(host).IsLoopback() {
		fmt.Fprintln(os.Stderr, "idleconns: -addr must be a loopback host:port")
		os.Exit(2)
	}
	cfg := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}, ClientSessionCache: tls.NewLRUClientSessionCache(64)}
	conns := make([]net.Conn, *n)
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, *parallel)
	start := time.Now()
	for i := range conns {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", *addr, cfg)
			if err == nil {
				err = oneRequest(c)
			}
			if err != nil {
				failed.Add(1)
				if c != nil {
					c.Close()
				}
				return
			}
			conns[i] = c
			ok.Add(1)
		})
	}
	wg.Wait()
	fmt.Printf("open=%d failed=%d in %v\n", ok.Load(), failed.Load(), time.Since(start).Round(time.Millisecond))
	time.Sleep(*hold)
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// oneRequest sends GET / and reads the whole response, leaving the
// connection idle in keep-alive.
func oneRequest(c net.Conn) error {
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err
}
