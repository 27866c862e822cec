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
