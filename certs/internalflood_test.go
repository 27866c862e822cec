package certs

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// caServer is a loopback TLS listener served by an internal-CA Manager, so
// the tests make real handshakes from real client addresses.
type caServer struct {
	m     *Manager
	reg   *prometheus.Registry
	logs  *syncBuffer
	addr  string
	roots *x509.CertPool
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newCAServer(t *testing.T, cfg Config) *caServer {
	t.Helper()
	s := &caServer{reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	cfg.Storage, cfg.Internal, cfg.Registerer = t.TempDir(), true, s.reg
	cfg.Logger = slog.New(slog.NewJSONHandler(s.logs, nil))
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.m = m
	root, err := InternalRootPEM(t.Context(), cfg.Storage, EtcdConfig{})
	if err != nil {
		t.Fatal(err)
	}
	s.roots = x509.NewCertPool()
	s.roots.AppendCertsFromPEM(root)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: m.GetCertificate})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.SetDeadline(time.Now().Add(5 * time.Second))
				c.(*tls.Conn).Handshake()
				c.Close()
			}()
		}
	}()
	s.addr = ln.Addr().String()
	return s
}

// hello makes a handshake for name from the loopback address from and
// returns the leaf served.
func (s *caServer) hello(from, name string) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := tls.DialWithDialer(d, "tcp", s.addr, &tls.Config{ServerName: name, RootCAs: s.roots})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

func floodName(i int) string { return fmt.Sprintf("r%d-%x.flood.test", i, rand.Uint32()) }

// Issue #16: with --tls-internal and no --domain, 300 random names used up
// every slot and a legitimate new name was refused. Now the flooding client
// gets its burst and then refusals, and a new name from anyone else is
// issued; the names the flooder got keep being served.
func TestInternalCAFloodCannotLockOutANewName(t *testing.T) {
	t.Parallel()
	// A clock that stands still: no token refills during the flood, however
	// slow the machine.
	start := time.Now()
	s := newCAServer(t, Config{Now: func() time.Time { return start }})
	var issued []string
	refused := 0
	for i := range 300 {
		name := floodName(i)
		if _, err := s.hello("127.0.0.1", name); err != nil {
			refused++
			continue
		}
		issued = append(issued, name)
	}
	if len(issued) != 16 || refused != 284 {
		t.Errorf("flood of 300 names from one address: %d issued, %d refused; want the burst of 16, then refusals", len(issued), refused)
	}
	leaf, err := s.hello("127.0.0.2", "legit.test")
	if err != nil {
		t.Fatalf("a new name from another client after the flood: %v", err)
	}
	if leaf.Subject.CommonName != "legit.test" {
		t.Errorf("served %q, want legit.test", leaf.Subject.CommonName)
	}
	if len(issued) > 0 {
		if _, err := s.hello("127.0.0.1", issued[0]); err != nil {
			t.Errorf("a name issued before the limit is no longer served: %v", err)
		}
	}
	if got := testutil.ToFloat64(s.m.src.(*internalSource).metrics.internalRefusals.WithLabelValues(refusedRateLimited)); got != float64(refused) {
		t.Errorf("internal_refusals_total{reason=rate_limited} = %v, want %d", got, refused)
	}
	logs := s.logs.String()
	// A burst of 10 lines, then one a second.
	if n, most := strings.Count(logs, `"msg":"internal CA refused a name"`), 11+int(time.Since(start).Seconds()); n == 0 || n > most {
		t.Errorf("%d refusal log lines for %d refusals; want some, at most %d (rate-limited)", n, refused, most)
	}
	if !strings.Contains(logs, `"reason":"rate_limited"`) || !strings.Contains(logs, `"remote_addr":"127.0.0.1"`) {
		t.Errorf("refusal log lacks reason or client address:\n%.1000s", logs)
	}
}

// Without a per-client limit to stop it (many clients, say), a flood still
// cannot lock out a name: the least recently served leaf makes room, and a
// name in use stays.
func TestInternalCAEvictsLeastRecentlyServed(t *testing.T) {
	t.Parallel()
	s := newCAServer(t, Config{InternalMaxNames: 8, InternalIssueBurst: 1000})
	hot, err := s.hello("127.0.0.1", "hot.test")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		if _, err := s.hello("127.0.0.1", floodName(i)); err != nil {
			t.Fatalf("name %d of the flood refused: %v", i, err)
		}
		if i%4 == 0 { // the app's own name is in use all along
			again, err := s.hello("127.0.0.1", "hot.test")
			if err != nil || again.SerialNumber.Cmp(hot.SerialNumber) != 0 {
				t.Fatalf("hot.test re-issued or refused during the flood (%v): it was evicted", err)
			}
		}
	}
	if n := len(s.m.Status()); n > 8 {
		t.Errorf("%d leaves kept, want at most InternalMaxNames = 8", n)
	}
	if _, err := s.hello("127.0.0.3", "new.test"); err != nil {
		t.Errorf("a new name after the flood: %v", err)
	}
	if n := testutil.CollectAndCount(s.reg, "outrider_certs_expiry_timestamp_seconds"); n > 8 {
		t.Errorf("%d expiry series, want at most 8 (evicted names are forgotten)", n)
	}
}

// With --domain, only those names are served: exact names, and one label
// under a "*." pattern, with the pattern's wildcard leaf.
func TestInternalCADomainPatterns(t *testing.T) {
	t.Parallel()
	s := newCAServer(t, Config{Domains: []string{"app.test", "*.apps.test"}})
	for _, tt := range []struct {
		name, wantCN string
	}{
		{"app.test", "app.test"},
		{"a.apps.test", "*.apps.test"},
		{"B.Apps.Test", "*.apps.test"},
		{"a.b.apps.test", ""},
		{"apps.test", ""},
		{"evil.test", ""},
	} {
		leaf, err := s.hello("127.0.0.1", tt.name)
		switch {
		case tt.wantCN == "" && err == nil:
			t.Errorf("%s: served %q, want refused", tt.name, leaf.Subject.CommonName)
		case tt.wantCN != "" && err != nil:
			t.Errorf("%s: %v, want %s", tt.name, err, tt.wantCN)
		case tt.wantCN != "" && leaf.Subject.CommonName != tt.wantCN:
			t.Errorf("%s: served %q, want %s", tt.name, leaf.Subject.CommonName, tt.wantCN)
		}
	}
	// A flood of names under the pattern issues nothing new.
	for i := range 100 {
		if _, err := s.hello("127.0.0.1", fmt.Sprintf("f%d.apps.test", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(s.m.Status()); n != 2 {
		t.Errorf("%d certificates after 100 names under the pattern, want the 2 configured", n)
	}
	src := s.m.src.(*internalSource)
	if got := testutil.ToFloat64(src.metrics.internalRefusals.WithLabelValues(refusedNotAllowed)); got != 3 {
		t.Errorf("internal_refusals_total{reason=not_allowed} = %v, want 3", got)
	}
	if _, err := s.m.GetCertificate(&tls.ClientHelloInfo{ServerName: "x.evil.test"}); !errors.Is(err, ErrNameNotAllowed) {
		t.Errorf("GetCertificate(x.evil.test) = %v, want ErrNameNotAllowed", err)
	}
}

func TestIssueLimiterRefillsAndBoundsClients(t *testing.T) {
	l := newIssueLimiter(2, time.Second)
	now := time.Unix(1000, 0)
	var got []bool
	for _, at := range []time.Time{now, now, now, now.Add(time.Second), now.Add(time.Second)} {
		got = append(got, l.allow("a", at))
	}
	if want := []bool{true, true, false, true, false}; !slices.Equal(got, want) {
		t.Errorf("allow over time = %v, want %v (a burst of 2, then one per interval)", got, want)
	}
	for i := range maxClients + 10 {
		l.allow(fmt.Sprint("c", i), now.Add(time.Duration(i)*time.Millisecond))
	}
	if len(l.buckets) > maxClients {
		t.Errorf("%d client buckets kept, want at most %d", len(l.buckets), maxClients)
	}
}
