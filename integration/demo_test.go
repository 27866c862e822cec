package integration

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// freeAddr returns a loopback address that was free a moment ago, for the
// rare flag whose port must be known before the process starts.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestDemo runs `outrider demo` the way the README tells a new user to and
// walks the story it prints: HTTPS to the app, publish a config, see the app
// use it, publish a broken one, see it rolled back, read /top.
func TestDemo(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	listen, admin := freeAddr(t), freeAddr(t)
	demo := start(t, procSpec{name: "outrider demo", bin: bins.outrider, noReady: true,
		args: []string{"demo", "--dir", dir, "--listen", listen, "--admin-listen", admin}})
	demo.waitLog(30*time.Second, "outrider demo is running")
	api := regexp.MustCompile(`http://127\.0\.0\.1:\d+/bundle`).FindString(demo.waitLog(5*time.Second, "/bundle"))
	if api == "" {
		t.Fatalf("demo did not print its config API:\n%s", demo.output())
	}
	rootPEM, err := os.ReadFile(filepath.Join(dir, "root.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatal("root.pem holds no certificate")
	}
	c := clientFor(listen, roots, true)
	if code, body, _ := get(t, c, "https://localhost/"); code != 200 || !strings.HasPrefix(body, "hello from the legacy app") {
		t.Fatalf("GET https://localhost/ = %d %q", code, body)
	}

	publish := func(content string) {
		req, _ := http.NewRequest(http.MethodPut, strings.TrimSuffix(api, "/bundle")+"/files/app.conf", strings.NewReader(content))
		resp, err := plainClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	publish("greeting=bonjour")
	waitFor(t, 20*time.Second, func() error {
		if _, body, _ := get(t, c, "https://localhost/"); !strings.HasPrefix(body, "bonjour") {
			return fmt.Errorf("app still says %q", body)
		}
		return nil
	})

	publish("healthy=false")
	var status struct {
		Configsync struct {
			AppliedVersion string `json:"applied_version"`
			Rollbacks      int    `json:"rollbacks"`
		} `json:"configsync"`
	}
	waitFor(t, 30*time.Second, func() error {
		getJSON(t, plainClient, "http://"+admin+"/status", &status)
		if status.Configsync.Rollbacks < 1 {
			return fmt.Errorf("no rollback yet: %+v", status.Configsync)
		}
		return nil
	})
	if _, body, _ := get(t, c, "https://localhost/"); !strings.HasPrefix(body, "bonjour") {
		t.Errorf("after the rollback the app says %q, want the last good config", body)
	}

	token, err := os.ReadFile(filepath.Join(dir, "top-token"))
	if err != nil {
		t.Fatal(err)
	}
	var top struct {
		Processes []map[string]any `json:"processes"`
	}
	if code := getJSON(t, plainClient, "http://"+admin+"/top?sort=cpu&limit=5", &top,
		"Authorization", "Bearer "+strings.TrimSpace(string(token))); code != 200 || len(top.Processes) == 0 {
		t.Errorf("/top = %d with %d processes", code, len(top.Processes))
	}
	if code, _, _ := get(t, plainClient, "http://"+admin+"/top"); code != http.StatusUnauthorized {
		t.Errorf("/top without the token = %d, want 401", code)
	}
}

// Issue #12: with its default ports taken, the demo used to print "demo is
// running … Try:" (it dialled :8443 and believed whoever answered) and
// then die. It now moves to free ports and says so, prints the live /top
// URL, and removes its temporary directory, CA keys included, on exit.
func TestDemoDefaultPortsTaken(t *testing.T) {
	skipShort(t)
	for _, addr := range []string{"127.0.0.1:8443", "127.0.0.1:9901"} {
		if ln, err := net.Listen("tcp", addr); err == nil { // else taken already, as wanted
			t.Cleanup(func() { ln.Close() })
		}
	}
	tmp := t.TempDir()
	demo := start(t, procSpec{name: "outrider demo", bin: bins.outrider, noReady: true,
		env: []string{"TMPDIR=" + tmp}, args: []string{"demo"}})
	demo.waitLog(10*time.Second, "127.0.0.1:8443 is in use; using a free port instead (choose one with --listen)")
	demo.waitLog(10*time.Second, "127.0.0.1:9901 is in use; using a free port instead (choose one with --admin-listen)")
	line := demo.waitLog(30*time.Second, "outrider demo is running")
	dir := regexp.MustCompile(`Working directory: (\S+)`).FindStringSubmatch(line)
	if dir == nil || !strings.HasPrefix(dir[1], tmp) {
		t.Fatalf("no temporary working directory in %q", line)
	}
	topURL := regexp.MustCompile(`http://(127\.0\.0\.1:\d+)/top#token=([0-9a-f]+)`).FindStringSubmatch(demo.waitLog(5*time.Second, "/top#token="))
	if topURL == nil || strings.HasSuffix(topURL[1], ":9901") {
		t.Fatalf("no /top browser URL on a free port:\n%s", demo.output())
	}
	demo.waitLog(5*time.Second, "update-ca-certificates")
	if code := getJSON(t, plainClient, "http://"+topURL[1]+"/top?limit=1", &struct{}{}, "Authorization", "Bearer "+topURL[2]); code != 200 {
		t.Errorf("/top with the printed token = %d", code)
	}
	https := regexp.MustCompile(`https://localhost:(\d+)`).FindStringSubmatch(demo.output())
	roots := x509.NewCertPool()
	rootPEM, _ := os.ReadFile(filepath.Join(dir[1], "root.pem"))
	if https == nil || https[1] == "8443" || !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("no HTTPS URL on a free port, or no root.pem:\n%s", demo.output())
	}
	c := clientFor("127.0.0.1:"+https[1], roots, true)
	if code, body, _ := get(t, c, "https://localhost/"); code != 200 || !strings.HasPrefix(body, "hello from the legacy app") {
		t.Errorf("GET https://localhost/ = %d %q", code, body)
	}
	demo.stop()
	if _, err := os.Stat(dir[1]); !os.IsNotExist(err) {
		t.Errorf("temporary directory %s still there after exit (%v): it holds the CA's keys", dir[1], err)
	}
}

// A port given by flag must be free: the demo names the flag and exits 2.
func TestDemoChosenPortTaken(t *testing.T) {
	skipShort(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	demo := start(t, procSpec{name: "outrider demo", bin: bins.outrider, noReady: true, exitCode: 2,
		args: []string{"demo", "--listen", ln.Addr().String(), "--dir", t.TempDir()}})
	demo.stopped = true
	if code := demo.wait(20 * time.Second); code != 2 || !strings.Contains(demo.output(), "choose another address with --listen") ||
		strings.Contains(demo.output(), "demo is running") {
		t.Errorf("exit %d, output %q; want 2 naming --listen, and no 'running'", code, demo.output())
	}
}
