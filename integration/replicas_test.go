package integration

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Many replicas, one certificate (issue #8): outrider replicas on
// different loopback addresses share --storage etcd://…, behind a TCP
// round-robin balancer that Pebble's validator dials for HTTP-01 and
// TLS-ALPN-01, so a challenge lands on whichever replica the balancer picks.

const replicaName = "replica.example"

var replicaIPs = []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}

// balancer forwards TCP connections to the replicas in turn. avoid, when
// set, names a replica to try last (the one holding the order lock, so that
// validations provably land elsewhere). hold makes new connections wait.
type balancer struct {
	t   *testing.T
	ips []string

	mu     sync.Mutex
	next   int
	avoid  func() string
	hold   chan struct{} // non-nil: connections wait until it is closed
	held   int
	served []string // backend IP of each forwarded connection
	conns  map[net.Conn]bool
	closed bool
}

func newBalancer(t *testing.T, ips []string) *balancer {
	b := &balancer{t: t, ips: ips, conns: map[net.Conn]bool{}}
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.closed = true
		if b.hold != nil {
			close(b.hold)
			b.hold = nil
		}
		for c := range b.conns {
			c.Close()
		}
	})
	return b
}

// listen accepts on a free 127.0.0.1 port and forwards to backendPort on
// the replicas; it returns the port.
func (b *balancer) listen(backendPort int) int {
	b.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go b.forward(c, backendPort)
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func (b *balancer) track(c net.Conn, add bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if add && b.closed {
		return false
	}
	if add {
		b.conns[c] = true
	} else {
		delete(b.conns, c)
	}
	return true
}

// setAvoid makes the balancer send connections to the replica avoid names
// last; Pebble may already be connecting, so it takes the lock.
func (b *balancer) setAvoid(avoid func() string) {
	b.mu.Lock()
	b.avoid = avoid
	b.mu.Unlock()
}

// order returns the replicas to try for one connection: round robin, with
// the avoided one last.
func (b *balancer) order() []string {
	b.mu.Lock()
	start := b.next
	b.next++
	avoid := b.avoid
	b.mu.Unlock()
	var out []string
	for i := range b.ips {
		out = append(out, b.ips[(start+i)%len(b.ips)])
	}
	if avoid != nil {
		if a := avoid(); a != "" {
			for i, ip := range out {
				if ip == a {
					out = append(append(out[:i:i], out[i+1:]...), a)
					break
				}
			}
		}
	}
	return out
}

func (b *balancer) forward(c net.Conn, port int) {
	defer c.Close()
	if !b.track(c, true) {
		return
	}
	defer b.track(c, false)
	b.mu.Lock()
	hold := b.hold
	if hold != nil {
		b.held++
	}
	b.mu.Unlock()
	if hold != nil {
		<-hold
	}
	var up net.Conn
	var ip string
	for _, ip = range b.order() {
		var err error
		up, err = net.DialTimeout("tcp", net.JoinHostPort(ip, strconv.Itoa(port)), 2*time.Second)
		if err == nil {
			break
		}
	}
	if up == nil {
		return
	}
	defer up.Close()
	if !b.track(up, true) {
		return
	}
	defer b.track(up, false)
	b.mu.Lock()
	b.served = append(b.served, ip)
	b.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(c, up); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
}

func (b *balancer) setHold(on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case on && b.hold == nil:
		b.hold = make(chan struct{})
	case !on && b.hold != nil:
		close(b.hold)
		b.hold = nil
	}
}

func (b *balancer) stats() (held int, served []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held, append([]string(nil), b.served...)
}

// replicaSet is etcd, Pebble, the balancer, one app and three replicas.
type replicaSet struct {
	t        *testing.T
	etcd     *etcd
	peb      *pebble
	bal      *balancer
	replicas map[string]*proc // by IP
	tlsPort  int
	storage  string
}

const replicaPrefix = "/outrider/certs"

func startReplicaSet(t *testing.T, beforeReplicas func(*replicaSet)) *replicaSet {
	t.Helper()
	skipShort(t)
	rs := &replicaSet{t: t, etcd: startEtcd(t), replicas: map[string]*proc{}}
	rs.storage = rs.etcd.URL(replicaPrefix)
	for _, ip := range replicaIPs {
		ln, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Skipf("loopback address %s unusable: %v", ip, err)
		}
		ln.Close()
	}
	httpPort, tlsPort := pickPort(t), pickPort(t)
	rs.tlsPort = tlsPort
	rs.bal = newBalancer(t, replicaIPs)
	rs.peb = startPebble(t, pebbleOpts{HTTPPort: rs.bal.listen(httpPort), TLSPort: rs.bal.listen(tlsPort)})
	if beforeReplicas != nil {
		beforeReplicas(rs)
	}
	app := startApp(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, ip := range replicaIPs {
		wg.Go(func() {
			p := startOutrider(t, "proxy",
				"--upstream", "http://"+app.addr("addr"),
				"--domain", replicaName,
				"--acme-directory", rs.peb.DirectoryURL,
				"--acme-ca-root", rs.peb.CARootFile,
				"--acme-email", "ops@replica.example",
				"--storage", rs.storage,
				"--etcd-lock-ttl", "2s",
				"--listen", ip+":"+strconv.Itoa(tlsPort),
				"--http-listen", ip+":"+strconv.Itoa(httpPort),
				"--admin-listen", "127.0.0.1:0",
				"--acme-renew-check-interval", "1s",
			)
			mu.Lock()
			rs.replicas[ip] = p
			mu.Unlock()
		})
	}
	wg.Wait()
	return rs
}

// lockHolder returns the IP of the replica holding the order lock for the
// name, from the owner recorded in the lock key, or "".
func (rs *replicaSet) lockHolder() string {
	resp, err := rs.etcd.Client().Get(rs.t.Context(), replicaPrefix+"/locks/issue_cert_"+replicaName)
	if err != nil || len(resp.Kvs) == 0 {
		return ""
	}
	var owner struct{ PID int }
	json.Unmarshal(resp.Kvs[0].Value, &owner)
	for ip, p := range rs.replicas {
		if p.cmd.Process.Pid == owner.PID {
			return ip
		}
	}
	return ""
}

// served returns the leaf a replica serves for the name, verified against
// Pebble's issuing root.
func (rs *replicaSet) served(ip string) (*x509.Certificate, error) {
	leaf, err := servedChain(net.JoinHostPort(ip, strconv.Itoa(rs.tlsPort)), replicaName, rs.peb.Roots())
	if err != nil {
		return nil, err
	}
	return leaf, nil
}

// waitSameCertificate waits until every live replica serves a Pebble
// certificate, and requires it to be the same one.
func (rs *replicaSet) waitSameCertificate(timeout time.Duration, live []string) string {
	rs.t.Helper()
	serials := map[string]string{}
	waitFor(rs.t, timeout, func() error {
		for _, ip := range live {
			c, err := rs.served(ip)
			if err != nil {
				return err
			}
			serials[ip] = c.SerialNumber.String()
		}
		return nil
	})
	first := serials[live[0]]
	for ip, s := range serials {
		if s != first {
			rs.t.Errorf("replica %s serves serial %s, %s serves %s: want one certificate", ip, s, live[0], first)
		}
	}
	return first
}

// ledgerIssued returns how many certificates the shared order ledger
// records for the name.
func (rs *replicaSet) ledgerIssued() int {
	rs.t.Helper()
	resp, err := rs.etcd.Client().Get(rs.t.Context(), replicaPrefix+"/data/outrider/ledger/", clientv3.WithPrefix())
	if err != nil {
		rs.t.Fatal(err)
	}
	n := 0
	for _, kv := range resp.Kvs {
		var e struct {
			Names  []string
			Issued []time.Time
		}
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			rs.t.Fatalf("ledger %s: %v", kv.Key, err)
		}
		if strings.Join(e.Names, ",") == replicaName {
			n += len(e.Issued)
		}
	}
	return n
}

// Three replicas order the name once, share the certificate and answer
// challenges for an order another replica started.
func TestReplicasShareOneCertificate(t *testing.T) {
	rs := startReplicaSet(t, func(rs *replicaSet) {
		rs.bal.setAvoid(rs.lockHolder) // validations go to a replica that did not order
	})
	serial := rs.waitSameCertificate(60*time.Second, replicaIPs)
	if n := rs.peb.Orders(); n != 1 {
		t.Errorf("Pebble accepted %d orders for 3 replicas, want 1", n)
	}
	if n := rs.ledgerIssued(); n != 1 {
		t.Errorf("the shared ledger records %d certificates, want 1", n)
	}
	_, served := rs.bal.stats()
	if len(served) == 0 {
		t.Fatal("no validation connection went through the balancer")
	}
	t.Logf("serial %s; validation connections answered by %v", serial, served)

	// A replica restarted later loads the shared certificate: no new order.
	ip := replicaIPs[1]
	args := rs.replicas[ip].cmd.Args[1:]
	rs.replicas[ip].stop()
	rs.replicas[ip] = startOutrider(t, args[:len(args)-1]...) // drop the --log-format startOutrider adds
	if got := rs.waitSameCertificate(30*time.Second, replicaIPs); got != serial {
		t.Errorf("restarted replica serves serial %s, want the shared %s", got, serial)
	}
	if n := rs.peb.Orders(); n != 1 {
		t.Errorf("after a replica restart Pebble has %d orders, want 1", n)
	}
}

// The replica holding the order lock is SIGKILLed in the middle of its
// order (Pebble's validation is held at the balancer); its lease expires
// and another replica completes the certificate.
func TestReplicasLockHolderKilledMidOrder(t *testing.T) {
	rs := startReplicaSet(t, func(rs *replicaSet) { rs.bal.setHold(true) })
	var holder string
	waitFor(t, 60*time.Second, func() error {
		if held, _ := rs.bal.stats(); held == 0 {
			return fmt.Errorf("no validation connection yet")
		}
		if holder = rs.lockHolder(); holder == "" {
			return fmt.Errorf("no replica holds the order lock")
		}
		return nil
	})
	killed := time.Now()
	rs.replicas[holder].kill()
	t.Logf("killed %s (pid %d) holding the order lock with a validation in flight", holder, rs.replicas[holder].cmd.Process.Pid)
	rs.bal.setHold(false)
	var live []string
	for _, ip := range replicaIPs {
		if ip != holder {
			live = append(live, ip)
		}
	}
	rs.waitSameCertificate(60*time.Second, live)
	t.Logf("certificate served by the survivors %v after the kill", time.Since(killed).Round(100*time.Millisecond))
	if h := rs.lockHolder(); h == holder {
		t.Errorf("the dead replica %s still holds the lock", holder)
	}
	if n := rs.ledgerIssued(); n != 1 {
		t.Errorf("the shared ledger records %d certificates, want 1", n)
	}
	t.Logf("Pebble orders: %d (the dead replica's, abandoned, and the survivor's)", rs.peb.Orders())
}
