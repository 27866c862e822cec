package topapi

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// TestRedactShapesInEveryView runs every shape of the redaction table as a
// process of the fixture /proc and reads it back through JSON, the text
// table, the HTML page and /metrics: no secret shows in any of them, and
// the JSON holds exactly the redacted command line (issue #16). The page
// itself holds no data (it renders the JSON); integration's
// TestTopRedactsEveryShapeInEveryView renders it in Chromium.
func TestRedactShapesInEveryView(t *testing.T) {
	cases := loadRedactCases(t)
	f := newFixture(t)
	for i, c := range cases {
		pid := 1000 + i
		dir := filepath.Join(f.proc, fmt.Sprint(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		comm := filepath.Base(c.Argv[0])
		if len(comm) > 15 {
			comm = comm[:15] // as the kernel keeps it
		}
		f.write(fmt.Sprintf("proc/%d/stat", pid), statLine(pid, comm, "S", 1, 10, 0, 1, 500, 100))
		f.write(fmt.Sprintf("proc/%d/status", pid), fmt.Sprintf("Name:\t%s\nPid:\t%d\nPPid:\t1\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n", comm, pid))
		f.write(fmt.Sprintf("proc/%d/cmdline", pid), strings.Join(c.Argv, "\x00")+"\x00")
	}
	reg := prometheus.NewRegistry()
	cfg := f.config()
	cfg.Registerer = reg
	cfg.TopN = len(cases) + 10 // every process gets its series
	s := f.sampler(cfg)
	twoSamples(t, f, s)
	h, err := NewHandler(HandlerConfig{Sampler: s})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/top", h)
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(path, accept string) string {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("Accept", accept)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s (%s) = %d %s", path, accept, resp.StatusCode, b)
		}
		return string(b)
	}
	views := map[string]string{
		"json":    get("/top", "application/json"),
		"text":    get("/top?sort=pid", "text/plain"),
		"html":    get("/top", "text/html"),
		"metrics": get("/metrics", "text/plain"),
	}
	var snap Snapshot
	if err := json.Unmarshal([]byte(views["json"]), &snap); err != nil {
		t.Fatal(err)
	}
	byPID := map[int][]string{}
	for _, p := range snap.Processes {
		byPID[p.PID] = p.Cmdline
	}
	for i, c := range cases {
		if diff := cmp.Diff(c.Want, byPID[1000+i]); diff != "" {
			t.Errorf("%s: JSON cmdline (-want +got):\n%s", c.Name, diff)
		}
		for view, body := range views {
			for _, secret := range c.Secrets {
				if strings.Contains(body, secret) {
					t.Errorf("%s: the %s view shows %q", c.Name, view, secret)
				}
			}
		}
	}
	if !strings.Contains(views["metrics"], `outrider_top_process_threads{name="sshpass"`) {
		t.Error("/metrics has no series of the table's processes; the check above proved nothing")
	}
}
