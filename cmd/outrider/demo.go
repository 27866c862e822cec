package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
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
		"config API, and /top on the admin listener. Prints what to try. Ctrl-C stops it.\n"+
		"A default port that is taken is replaced by a free one; a port given by flag must be free.")
	listen := fs.String("listen", "127.0.0.1:8443", "HTTPS `address` of the proxy")
	adminListen := fs.String("admin-listen", "127.0.0.1:9901", "admin `address`: /metrics, /readyz, /status, /top")
	workDir := fs.String("dir", "", "working `dir` for the app's config, state and the CA, kept on exit (default: a new temporary directory, removed on exit)")
	fs.share("log-level")
	logLevel := fs.String("log-level", "warn", "least severe level logged: debug, info, warn or error")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	for _, l := range []struct {
		addr *string
		flag string
	}{{listen, "listen"}, {adminListen, "admin-listen"}} {
		if err := demoAddr(fs, l.addr, l.flag, stderr); err != nil {
			return err
		}
	}
	dir := *workDir
	if dir == "" {
		d, err := os.MkdirTemp("", "outrider-demo-")
		if err != nil {
			return err
		}
		dir = d
		// It holds the internal CA's keys: never leave them behind.
		defer os.RemoveAll(dir)
	}
	shared, state, storage := filepath.Join(dir, "shared"), filepath.Join(dir, "state"), filepath.Join(dir, "storage")
	for _, d := range []string{shared, state, storage} {
		if err := os.MkdirAll(d, 0o700); err != nil {
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
	tokenBytes := make([]byte, 16)
	rand.Read(tokenBytes)
	token := hex.EncodeToString(tokenBytes)
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		return err
	}

	// Instructions only once the proxy's own listeners are open.
	onListening := func(httpsAddr, adminAddr string) {
		// The proxy created the internal CA before listening: hand out its root.
		rootPEM, err := certs.InternalRootPEM(ctx, storage, certs.EtcdConfig{})
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, "root.pem"), rootPEM, 0o644)
		}
		if err != nil {
			fmt.Fprintf(stderr, "outrider demo: writing root.pem: %v\n", err)
		}
		printDemoHelp(stdout, demoHelp{dir: dir, temporary: *workDir == "", https: httpsAddr, admin: adminAddr,
			appURL: appURL, apiURL: apiURL, token: token})
	}
	return proxyMain(ctx, []string{
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
	}, stdout, stderr, onListening)
}

// demoAddr checks that *addr can be bound. A default that is taken is
// replaced by a free port on the same host, with a note on stderr; an
// address the user chose must be free.
func demoAddr(fs *flagSet, addr *string, flagName string, stderr io.Writer) error {
	ln, err := net.Listen("tcp", *addr)
	if err == nil {
		ln.Close()
		return nil
	}
	if fs.isSet(flagName) || !errors.Is(err, syscall.EADDRINUSE) {
		return usageError{fmt.Errorf("--%s %s: %w; choose another address with --%s", flagName, *addr, err, flagName)}
	}
	host, _, _ := net.SplitHostPort(*addr)
	free := net.JoinHostPort(host, "0")
	fmt.Fprintf(stderr, "outrider demo: %s is in use; using a free port instead (choose one with --%s)\n", *addr, flagName)
	*addr = free
	return nil
}

type demoHelp struct {
	dir           string
	temporary     bool
	https, admin  string
	appURL        string
	apiURL, token string
}

func printDemoHelp(w io.Writer, h demoHelp) {
	_, port, _ := net.SplitHostPort(h.https)
	https := "https://localhost:" + port
	kept := "kept on exit"
	if h.temporary {
		kept = "removed on exit, CA keys included; --dir keeps it"
	}
	root := filepath.Join(h.dir, "root.pem")
	fmt.Fprintf(w, `
outrider demo is running. Ctrl-C stops it. Working directory: %[1]s (%[8]s)

  legacy app   %[4]s   plain HTTP, loopback only, reads %[1]s/shared/app.conf
  HTTPS        %[2]s   outrider proxy, certificate from its internal CA
  config API   %[5]s/bundle   what configsync keeps the app's files in sync with
  admin        http://%[3]s   /metrics /readyz /status /top
  /top page    http://%[3]s/top#token=%[6]s   (open it in a browser)

Try:
  curl --cacert %[7]s %[2]s/
  curl -X PUT --data 'greeting=bonjour' %[5]s/files/app.conf    # publish a new config...
  curl --cacert %[7]s %[2]s/                            # ...the app answers with it a few seconds later
  curl -X PUT --data 'healthy=false' %[5]s/files/app.conf       # a config that makes the app unhealthy...
  curl -s http://%[3]s/status                                    # ...is rolled back: see configsync.rollbacks
  curl -H "Authorization: Bearer $(cat %[1]s/top-token)" 'http://%[3]s/top?sort=cpu&limit=5'
  curl -s http://%[3]s/metrics | grep ^outrider_

To trust the demo's root in a browser, import %[7]s as an authority
(Firefox: Settings > Certificates > Import; Chrome on Linux: chrome://certificate-manager).
System-wide on Debian/Ubuntu (remove it again when done, the CA is the demo's):
  sudo cp %[7]s /usr/local/share/ca-certificates/outrider-demo.crt && sudo update-ca-certificates

`, h.dir, https, h.admin, h.appURL, h.apiURL, h.token, root, kept)
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
