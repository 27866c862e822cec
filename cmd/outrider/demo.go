package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/outrider-dev/outrider/certs"
	"github.com/outrider-dev/outrider/internal/legacyapp"
)

// runDemo runs the whole sidecar pattern on this machine: a legacy app on
// loopback, a config API, and `outrider proxy` in front of the app with the
// internal CA, configsync and /top — the same code paths as production,
// started through runProxy with ordinary flags.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("outrider demo", "Run the whole pattern on this machine: a small legacy app on 127.0.0.1 only, the proxy in\n"+
		"front of it on https://localhost:8443 with the internal CA, configsync feeding the app from a\n"+
		"config API, and /top on the admin listener. Prints what to try. Ctrl-C stops it.")
	listen := fs.String("listen", "127.0.0.1:8443", "HTTPS `address` of the proxy")
	adminListen := fs.String("admin-listen", "127.0.0.1:9901", "admin `address`: /metrics, /readyz, /status, /top")
	workDir := fs.String("dir", "", "working `dir` for the app's config, state and the CA (default: a new temporary directory)")
	logLevel := fs.String("log-level", "warn", "least severe level logged: debug, info, warn or error")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	dir := *workDir
	if dir == "" {
		d, err := os.MkdirTemp("", "outrider-demo-")
		if err != nil {
			return err
		}
		dir = d
	}
	shared, state, storage := filepath.Join(dir, "shared"), filepath.Join(dir, "state"), filepath.Join(dir, "storage")
	for _, d := range []string{shared, state, storage} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}

	// The legacy app: plain HTTP on loopback, settings from shared/app.conf.
	app := legacyapp.New(shared)
	appLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	appURL := "http://" + appLn.Addr().String()
	go (&http.Server{Handler: app, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}).Serve(appLn)
	defer appLn.Close()

	// The config API configsync polls.
	api := newDemoAPI(map[string]string{"app.conf": "greeting=hello\n"})
	apiLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	apiURL := "http://" + apiLn.Addr().String()
	go (&http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}).Serve(apiLn)
	defer apiLn.Close()

	tokenFile := filepath.Join(dir, "top-token")
	token := make([]byte, 16)
	rand.Read(token)
	if err := os.WriteFile(tokenFile, []byte(hex.EncodeToString(token)+"\n"), 0o600); err != nil {
		return err
	}

	go func() {
		if !waitHTTPS(ctx, *listen) {
			return
		}
		// The proxy created the internal CA at start: hand out its root.
		rootPEM, err := certs.InternalRootPEM(ctx, storage, certs.EtcdConfig{})
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, "root.pem"), rootPEM, 0o644)
		}
		if err != nil {
			fmt.Fprintf(stderr, "outrider demo: writing root.pem: %v\n", err)
		}
		printDemoHelp(stdout, dir, *listen, *adminListen, appURL, apiURL)
	}()
	return runProxy(ctx, []string{
		"--listen", *listen, "--http-listen", "", "--admin-listen", *adminListen,
		"--upstream", appURL,
		"--tls-internal", "--domain", "localhost", "--storage", storage,
		"--top", "--top-token-file", tokenFile,
		"--configsync-source", apiURL + "/bundle",
		"--configsync-dir", shared, "--configsync-state-dir", state,
		"--configsync-interval", "2s", "--configsync-debounce", "200ms",
		"--configsync-notify", "http:POST:" + appURL + "/-/reload",
		"--configsync-health-url", appURL + "/healthz", "--configsync-health-timeout", "3s",
		"--log-level", *logLevel,
	}, stdout, stderr)
}

// waitHTTPS reports whether addr accepted a TCP connection before ctx ended.
func waitHTTPS(ctx context.Context, addr string) bool {
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func printDemoHelp(w io.Writer, dir, listen, admin, appURL, apiURL string) {
	_, port, _ := net.SplitHostPort(listen)
	https := "https://localhost:" + port
	fmt.Fprintf(w, `
outrider demo is running. Ctrl-C stops it. Working directory: %[1]s

  legacy app   %[4]s   plain HTTP, loopback only, reads %[1]s/shared/app.conf
  HTTPS        %[2]s   outrider proxy, certificate from its internal CA
  config API   %[5]s/bundle   what configsync keeps the app's files in sync with
  admin        http://%[3]s   /metrics /readyz /status /top

Try:
  curl --cacert %[1]s/root.pem %[2]s/
  curl -X PUT --data 'greeting=bonjour' %[5]s/files/app.conf    # publish a new config...
  curl --cacert %[1]s/root.pem %[2]s/                            # ...the app answers with it a few seconds later
  curl -X PUT --data 'healthy=false' %[5]s/files/app.conf       # a config that makes the app unhealthy...
  curl -s http://%[3]s/status                                    # ...is rolled back: see configsync.rollbacks
  curl -H "Authorization: Bearer $(cat %[1]s/top-token)" 'http://%[3]s/top?sort=cpu&limit=5'
  curl -s http://%[3]s/metrics | grep ^outrider_

`, dir, https, admin, appURL, apiURL)
}

// demoAPI is a tiny config API: GET /bundle answers the JSON bundle with an
// ETag; PUT /files/NAME replaces one file and makes a new version.
type demoAPI struct {
	mu      sync.Mutex
	files   map[string]string
	version int
}

func newDemoAPI(files map[string]string) *demoAPI { return &demoAPI{files: files, version: 1} }

func (a *demoAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/bundle":
		body, _ := json.Marshal(map[string]any{"files": a.files, "version": strconv.Itoa(a.version)})
		sum := sha256.Sum256(body)
		etag := `"` + hex.EncodeToString(sum[:8]) + `"`
		w.Header().Set("ETag", etag)
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	case r.Method == http.MethodPut && len(r.URL.Path) > len("/files/") && r.URL.Path[:len("/files/")] == "/files/":
		b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "reading body", http.StatusBadRequest)
			return
		}
		if len(b) > 0 && b[len(b)-1] != '\n' {
			b = append(b, '\n')
		}
		a.files[r.URL.Path[len("/files/"):]] = string(b)
		a.version++
		fmt.Fprintf(w, "published version %d\n", a.version)
	default:
		http.Error(w, "GET /bundle or PUT /files/NAME", http.StatusNotFound)
	}
}
