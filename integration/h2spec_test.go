package integration

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/outrider-dev/outrider/internal/testcert"
)

// h2specVersion is the h2spec release built from the Go module proxy. It has
// no go.mod, so the module proxy serves it as +incompatible.
const h2specVersion = "v2.2.1+incompatible"

// h2specKnownFailures are the cases Go's own HTTP/2 server fails; outrider
// inherits them. Anything else failing is a regression.
var h2specKnownFailures = map[string]string{
	"http2/4.2/3":     "golang/go#25023: a frame larger than SETTINGS_MAX_FRAME_SIZE on a stream is not a connection error",
	"http2/6.5.3/1":   "golang/go#56760: multiple SETTINGS_INITIAL_WINDOW_SIZE values in one frame are not applied in order",
	"http2/8.1.2.2/1": "golang/go#26321: connection-specific header fields are not refused with PROTOCOL_ERROR",
	"http2/8.1.2.2/2": "golang/go#26321: TE other than \"trailers\" is not refused with PROTOCOL_ERROR",
}

// buildH2spec builds h2spec into a temporary directory with `go install`,
// from the module cache or the module proxy. Locally a failure (no network)
// skips; in CI it fails.
func buildH2spec(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "install", "github.com/summerwind/h2spec/cmd/h2spec@"+h2specVersion)
	cmd.Dir = dir // outside our module: its go.mod must not apply
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		if inCI() {
			t.Fatalf("building h2spec: %v\n%s", err, out)
		}
		t.Skipf("cannot build h2spec (offline?): %v\n%s", err, out)
	}
	return filepath.Join(dir, "h2spec")
}

type junitSuites struct {
	Suites []struct {
		Package string `xml:"package,attr"`
		Cases   []struct {
			Name    string    `xml:"classname,attr"`
			Failure *struct{} `xml:"failure"`
			Error   *struct{} `xml:"error"`
			Skipped *struct{} `xml:"skipped"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// TestH2spec runs every h2spec case (generic, http2, hpack) over TLS against
// outrider in front of the test app: the whole proxy path. Only Go's known
// failures are allowed.
func TestH2spec(t *testing.T) {
	skipShort(t)
	h2spec := buildH2spec(t)
	e := startProxy(t, "--access-log=false")
	_, port, _ := net.SplitHostPort(e.https)
	report := filepath.Join(t.TempDir(), "h2spec.xml")
	cmd := exec.CommandContext(t.Context(), h2spec, "--tls", "--insecure", "--host", "127.0.0.1", "--port", port,
		"--timeout", "5", "--junit-report", report)
	out, err := cmd.CombinedOutput()
	// h2spec exits non-zero when any case fails; the report decides.
	b, rerr := os.ReadFile(report)
	if rerr != nil {
		t.Fatalf("h2spec wrote no report (%v): %v\n%s", err, rerr, out)
	}
	var res junitSuites
	if err := xml.Unmarshal(b, &res); err != nil {
		t.Fatalf("parsing the h2spec report: %v", err)
	}
	var total, passed, skipped int
	var failed []string
	for _, s := range res.Suites {
		for i, c := range s.Cases {
			total++
			id := fmt.Sprintf("%s/%d", s.Package, i+1)
			switch {
			case c.Failure != nil || c.Error != nil:
				failed = append(failed, id)
				if _, known := h2specKnownFailures[id]; !known {
					t.Errorf("h2spec %s failed: %s", id, c.Name)
				}
			case c.Skipped != nil:
				skipped++
			default:
				passed++
			}
		}
	}
	t.Logf("h2spec %s: %d tests, %d passed, %d skipped, %d failed %v", h2specVersion, total, passed, skipped, len(failed), failed)
	if total < 140 {
		t.Errorf("h2spec ran only %d cases, want the full suite (145)", total)
	}
	if t.Failed() {
		t.Logf("h2spec output:\n%s", out)
	}
	if code, _, _ := get(t, e.h2, "https://app.example/"); code != 200 {
		t.Errorf("outrider after h2spec: %d", code)
	}
}

// TestHTTP2RapidReset sends 10,000 HEADERS+RST_STREAM pairs on one
// connection (CVE-2023-44487). outrider must end the connection (GOAWAY or
// close) after its reset budget, few requests may reach the app, and
// goroutines and heap must return to their baseline.
func TestHTTP2RapidReset(t *testing.T) {
	skipShort(t)
	// The upstream counts what reaches it; it answers slowly so that a
	// request that got through is still in flight when its reset arrives.
	var reached atomic.Int64
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		select {
		case <-r.Context().Done():
		case <-time.After(50 * time.Millisecond):
		}
		w.Write([]byte("ok\n"))
	}))
	t.Cleanup(app.Close)
	ca := testcert.NewCA(t)
	cf, kf := ca.LeafFiles(t, t.TempDir(), "app.example")
	px := startOutrider(t, "proxy", "--listen", "127.0.0.1:0", "--http-listen", "", "--admin-listen", "127.0.0.1:0",
		"--upstream", app.URL, "--cert", cf, "--key", kf, "--pprof", "--access-log=false")
	https, admin := px.addr("https_addr"), px.addr("admin_addr")
	h2 := clientFor(https, ca.Pool(), true)
	if code, _, _ := get(t, h2, "https://app.example/warm"); code != 200 {
		t.Fatalf("warm-up request: %d", code)
	}
	h2.CloseIdleConnections()
	baseG, baseHeap := runtimeStats(t, admin)
	baseRSS := rssBytes(t, px.cmd.Process.Pid)
	reached.Store(0)

	e := &proxyEnv{https: https, ca: ca}
	c, err := e.dialTLS("h2")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	fr := startH2(t, c)
	ended := make(chan string, 1)
	var wmu sync.Mutex
	go func() { ended <- readUntilClosed(fr, &wmu) }()

	const n = 10000
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	sent := 0
	var werr error
	for i := range n {
		block := getHeaders(enc, &hb, "/rr/"+strconv.Itoa(i))
		id := uint32(2*i + 1)
		wmu.Lock()
		werr = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true})
		if werr == nil {
			werr = fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}
		wmu.Unlock()
		if werr != nil {
			break
		}
		sent++
	}
	var how string
	select {
	case how = <-ended:
	case <-time.After(30 * time.Second):
		how = "still open"
	}
	c.Close()
	// Give requests that got through time to arrive and finish.
	time.Sleep(500 * time.Millisecond)
	got := reached.Load()
	t.Logf("rapid reset: %d HEADERS+RST_STREAM pairs written (write error: %v); connection: %s; %d requests reached the app",
		sent, werr, how, got)
	if how == "still open" {
		t.Errorf("connection still open after %d reset streams: want GOAWAY or close", sent)
	}
	if got >= 1000 {
		t.Errorf("%d of %d reset requests reached the app, want far fewer (stock Go: ~1,700)", got, sent)
	}
	_, metrics, _ := get(t, plainClient, "http://"+admin+"/metrics")
	closes := metricValue(metrics, "outrider_proxy_rapid_reset_closes_total")
	t.Logf("outrider_proxy_rapid_reset_closes_total = %v", closes)
	if closes < 1 && !strings.Contains(how, "GOAWAY") {
		t.Errorf("connection %s, but neither outrider's reset guard nor the HTTP/2 server's GOAWAY ended it", how)
	}

	// Back to baseline: goroutines (less the upstream pool) within 2 of it,
	// heap in use after a GC within 16 MiB of it.
	var g, heap float64
	waitFor(t, 20*time.Second, func() error {
		g, heap = runtimeStats(t, admin)
		if g > baseG+2 {
			return fmt.Errorf("%v goroutines, baseline %v", g, baseG)
		}
		if heap > baseHeap+16<<20 {
			return fmt.Errorf("heap in use %.1f MiB, baseline %.1f MiB", heap/(1<<20), baseHeap/(1<<20))
		}
		return nil
	})
	t.Logf("goroutines %v → %v; heap in use %.1f → %.1f MiB; RSS %d → %d MiB", baseG, g,
		baseHeap/(1<<20), heap/(1<<20), baseRSS>>20, rssBytes(t, px.cmd.Process.Pid)>>20)
	if code, _, _ := get(t, h2, "https://app.example/after"); code != 200 {
		t.Errorf("after the attack: %d", code)
	}
}

// runtimeStats returns outrider's goroutine count, leaving out the
// upstream connection pool (net/http persistConn read and write loops, which
// idle until IdleConnTimeout by design), and its heap in use after a forced
// GC (the heap profile endpoint with gc=1 runs one).
func runtimeStats(t *testing.T, admin string) (goroutines, heapInuse float64) {
	t.Helper()
	if code, _, _ := get(t, plainClient, "http://"+admin+"/debug/pprof/heap?gc=1"); code != 200 {
		t.Fatalf("/debug/pprof/heap = %d (is --pprof on?)", code)
	}
	_, dump, _ := get(t, plainClient, "http://"+admin+"/debug/pprof/goroutine?debug=1")
	// debug=1 groups goroutines by stack: "N @ 0x…" then "#\t…" frames.
	for _, block := range strings.Split(dump, "\n\n") {
		var n int
		if _, err := fmt.Sscanf(block, "%d @", &n); err != nil {
			continue
		}
		if !strings.Contains(block, "net/http.(*persistConn)") {
			goroutines += float64(n)
		}
	}
	_, metrics, _ := get(t, plainClient, "http://"+admin+"/metrics")
	heapInuse = metricValue(metrics, "go_memstats_heap_inuse_bytes")
	if goroutines == 0 || heapInuse < 0 {
		t.Fatalf("no goroutine profile or no go_memstats_heap_inuse_bytes")
	}
	return goroutines, heapInuse
}
