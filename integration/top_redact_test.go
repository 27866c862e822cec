package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// redactCase is a shape of topapi's redaction table (topapi/testdata).
type redactCase struct {
	Name    string   `json:"name"`
	Argv    []string `json:"argv"`
	Want    []string `json:"want"`
	Secrets []string `json:"secrets"`
}

// Issue #16: every command-line shape of the redaction table runs as a real
// process; outrider top shows each redacted, and no secret shows in the
// JSON, the text table, /metrics, or the live page as Chromium renders it.
func TestTopRedactsEveryShapeInEveryView(t *testing.T) {
	skipShort(t)
	b, err := os.ReadFile("../topapi/testdata/redact_cases.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []redactCase
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	pids := map[int]redactCase{}
	for _, c := range cases {
		// The test app idles under any command line, argv[0] included.
		cmd := &exec.Cmd{Path: bins.testapp, Args: c.Argv, Env: []string{"TESTAPP_IDLE=1"}}
		if err := cmd.Start(); err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
		pids[cmd.Process.Pid] = c
	}
	base := startTop(t, "--scope", fmt.Sprintf("tree=%d", os.Getpid()), "--top-n", "1000", "--interval", "500ms")
	auth := []string{"Authorization", "Bearer " + topToken}
	waitFor(t, 20*time.Second, func() error {
		seen := 0
		for _, p := range getTop(t, base+"/top?limit=5000").Processes {
			if _, ok := pids[p.PID]; ok {
				seen++
			}
		}
		if seen < len(pids) {
			return fmt.Errorf("%d of %d processes listed", seen, len(pids))
		}
		return nil
	})
	for _, p := range getTop(t, base+"/top?limit=5000").Processes {
		if c, ok := pids[p.PID]; ok {
			if diff := cmp.Diff(c.Want, p.Cmdline); diff != "" {
				t.Errorf("%s: cmdline (-want +got):\n%s", c.Name, diff)
			}
		}
	}
	check := func(t *testing.T, view, body string) {
		t.Helper()
		for _, c := range pids {
			for _, s := range c.Secrets {
				if strings.Contains(body, s) {
					t.Errorf("%s: the %s view shows %q", c.Name, view, s)
				}
			}
		}
	}
	for _, v := range []struct{ view, path, accept string }{
		{"json", "/top?limit=5000", "application/json"},
		{"text", "/top?limit=5000", "text/plain"},
		{"metrics", "/metrics", "text/plain"},
	} {
		_, body, _ := get(t, plainClient, base+v.path, append([]string{"Accept", v.accept}, auth...)...)
		check(t, v.view, body)
	}
	t.Run("html", func(t *testing.T) {
		page := devtoolsPage(t, needTool(t, "chromium"), base+"/top#token="+topToken)
		waitFor(t, 30*time.Second, func() error {
			var n int
			fmt.Sscan(page.eval(t, `String(document.querySelectorAll("#rows tr[data-pid]").length)`), &n)
			if n < len(pids) {
				return fmt.Errorf("page shows %d rows, want at least %d", n, len(pids))
			}
			return nil
		})
		// Every cell's text and every title (the whole command line on hover).
		body := page.eval(t, `document.body.innerText + [...document.querySelectorAll("[title]")].map(e => e.title).join("\n")`)
		if !strings.Contains(body, "--password=***") {
			t.Errorf("the page does not show the redacted command lines:\n%.2000s", body)
		}
		check(t, "html", body)
	})
	t.Logf("%d shapes checked in JSON, text, /metrics and the page", len(pids))
}
