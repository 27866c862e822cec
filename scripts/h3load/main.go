// Command h3load is a small HTTP/3 load client (quic-go's), for measuring
// a server's HTTP/3 requests a second: -c connections, each with -m
// requests in flight, GET -url for -d, then one line of results. The
// address must be loopback; the server's certificate is trusted from
// -cacert (any name), or not checked with -insecure.
//
//	go run ./scripts/h3load -addr 127.0.0.1:8443 -url https://localhost/ -cacert cert.pem -c 16 -m 16 -d 10s
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "UDP `address` to send to (loopback)")
	url := flag.String("url", "https://localhost/", "request URL (its host is the SNI and :authority)")
	conns := flag.Int("c", 16, "connections")
	streams := flag.Int("m", 16, "requests in flight per connection")
	d := flag.Duration("d", 10*time.Second, "duration")
	warm := flag.Duration("warmup", time.Second, "load before counting starts")
	caFile := flag.String("cacert", "", "PEM `file` of the certificate(s) to trust")
	insecure := flag.Bool("insecure", false, "do not check the server's certificate")
	flag.Parse()
	if err := run(*addr, *url, *conns, *streams, *d, *warm, *caFile, *insecure); err != nil {
		fmt.Fprintln(os.Stderr, "h3load:", err)
		os.Exit(2)
	}
}

func run(addr, url string, conns, streams int, d, warm time.Duration, caFile string, insecure bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || !net.ParseIP(host).IsLoopback() {
		return errors.New("-addr must be a loopback host:port")
	}
	if conns < 1 || streams < 1 || d <= 0 {
		return errors.New("-c and -m must be at least 1, -d positive")
	}
	tlsCfg := &tls.Config{InsecureSkipVerify: insecure}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s: no certificate", caFile)
		}
		tlsCfg.RootCAs = pool
	}
	var (
		counting atomic.Bool
		done     atomic.Int64
		failed   atomic.Int64
		mu       sync.Mutex
		lat      []time.Duration
		firstErr atomic.Value
	)
	ctx, cancel := context.WithTimeout(context.Background(), warm+d)
	defer cancel()
	var wg sync.WaitGroup
	for range conns {
		// One Transport per connection: a Transport keeps one per host.
		tr := &http3.Transport{
			TLSClientConfig: tlsCfg.Clone(),
			QUICConfig:      &quic.Config{MaxIncomingStreams: int64(streams)},
			Dial: func(ctx context.Context, _ string, c *tls.Config, q *quic.Config) (*quic.Conn, error) {
				return quic.DialAddr(ctx, addr, c, q)
			},
		}
		defer tr.Close()
		client := &http.Client{Transport: tr}
		for range streams {
			wg.Go(func() {
				var mine []time.Duration
				defer func() { mu.Lock(); lat = append(lat, mine...); mu.Unlock() }()
				for ctx.Err() == nil {
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
					t0 := time.Now()
					resp, err := client.Do(req)
					if err == nil {
						_, err = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if err == nil && resp.StatusCode != 200 {
							err = fmt.Errorf("status %d", resp.StatusCode)
						}
					}
					if ctx.Err() != nil {
						return
					}
					if !counting.Load() {
						continue
					}
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
						continue
					}
					done.Add(1)
					mine = append(mine, time.Since(t0))
				}
			})
		}
	}
	time.Sleep(warm)
	counting.Store(true)
	start := time.Now()
	<-ctx.Done()
	elapsed := time.Since(start)
	wg.Wait()
	slices.Sort(lat)
	p := func(q float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(q*float64(len(lat))))]
	}
	fmt.Printf("requests %d failed %d seconds %.2f rps %.0f p50_ms %.2f p99_ms %.2f\n",
		done.Load(), failed.Load(), elapsed.Seconds(), float64(done.Load())/elapsed.Seconds(),
		float64(p(.5).Microseconds())/1000, float64(p(.99).Microseconds())/1000)
	if e, _ := firstErr.Load().(string); e != "" {
		fmt.Fprintln(os.Stderr, "h3load: first error:", e)
	}
	if done.Load() == 0 {
		return errors.New("no request succeeded")
	}
	return nil
}
