// Package legacyapp is a stand-in for the legacy application outrider sits
// beside: plain HTTP on loopback, settings read from files in a directory,
// reloaded on SIGHUP or POST /-/reload. The demo runs it in-process and the
// integration tests run it as its own binary (integration/testapp). It also
// has endpoints that exercise a proxy: echo, upgrade, SSE, chunked streams,
// slow and hanging responses, uploads, redirects and cookies.
package legacyapp

import (
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// App is the stand-in app. Use New.
type App struct {
	configDir string

	mu       sync.Mutex
	files    map[string]string
	loads    int
	loadedAt time.Time
	loadErr  error
	seen     []Seen // the last requests, newest last
	mux      *http.ServeMux
}

// Seen is one request as the app received it.
type Seen struct {
	Method           string      `json:"method"`
	Path             string      `json:"path"`
	Host             string      `json:"host"`
	ContentLength    int64       `json:"content_length"`
	TransferEncoding []string    `json:"transfer_encoding,omitempty"`
	Header           http.Header `json:"header"`
}

// New returns an App that reads configDir (may be empty: no config).
// It loads the config once; call Reload to re-read.
func New(configDir string) *App {
	a := &App{configDir: configDir, mux: http.NewServeMux()}
	a.Reload()
	a.routes()
	return a
}

// Reload re-reads every file under the config directory. On failure the
// previous config stays loaded and the error is returned.
func (a *App) Reload() error {
	files := map[string]string{}
	if a.configDir != "" {
		err := filepath.WalkDir(a.configDir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(a.configDir, p)
			if strings.HasPrefix(d.Name(), "..") && p != a.configDir {
				// kubelet-style bookkeeping (..data, ..2024_…): read through the
				// user-visible links only.
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			st, err := os.Stat(p) // follows links
			if err != nil || !st.Mode().IsRegular() {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			files[filepath.ToSlash(rel)] = string(b)
			return nil
		})
		if err != nil && !os.IsNotExist(err) {
			a.mu.Lock()
			a.loadErr = err
			a.mu.Unlock()
			return err
		}
	}
	a.mu.Lock()
	a.files, a.loadErr = files, nil
	a.loads++
	a.loadedAt = time.Now()
	a.mu.Unlock()
	return nil
}

// Setting returns the value of a "key=value" line in any loaded file.
func (a *App) Setting(key string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	names := make([]string, 0, len(a.files))
	for n := range a.files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		sc := bufio.NewScanner(strings.NewReader(a.files[n]))
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), "=")
			if ok && strings.TrimSpace(k) == key {
				return strings.TrimSpace(v)
			}
		}
	}
	return ""
}

func (a *App) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.seen = append(a.seen, Seen{Method: r.Method, Path: r.URL.Path, Host: r.Host, ContentLength: r.ContentLength,
		TransferEncoding: r.TransferEncoding, Header: r.Header.Clone()})
	if len(a.seen) > 200 {
		a.seen = a.seen[len(a.seen)-200:]
	}
	a.mu.Unlock()
	a.mux.ServeHTTP(w, r)
}

func (a *App) routes() {
	m := a.mux
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		greeting := a.Setting("greeting")
		if greeting == "" {
			greeting = "hello"
		}
		fmt.Fprintf(w, "%s from the legacy app (it speaks plain HTTP on loopback; it saw X-Forwarded-Proto=%q)\n",
			greeting, r.Header.Get("X-Forwarded-Proto"))
	})
	m.HandleFunc("GET /config", func(w http.ResponseWriter, _ *http.Request) {
		a.mu.Lock()
		out := map[string]any{"files": a.files, "loads": a.loads, "loaded_at": a.loadedAt}
		if a.loadErr != nil {
			out["load_error"] = a.loadErr.Error()
		}
		a.mu.Unlock()
		writeJSON(w, out)
	})
	m.HandleFunc("POST /-/reload", func(w http.ResponseWriter, _ *http.Request) {
		if err := a.Reload(); err != nil {
			http.Error(w, "reload failed: "+err.Error(), http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "reloaded\n")
	})
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if a.Setting("healthy") == "false" {
			http.Error(w, "unhealthy: config says healthy=false", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "ok\n")
	})
	m.HandleFunc("GET /-/seen", func(w http.ResponseWriter, _ *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		writeJSON(w, a.seen)
	})
	m.HandleFunc("/echo/", a.echo)
	m.HandleFunc("/echo", a.echo)
	m.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, map[string]any{"bytes": n, "sha256": hex.EncodeToString(h.Sum(nil))})
	})
	m.HandleFunc("GET /big", func(w http.ResponseWriter, r *http.Request) {
		size, _ := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
		if size <= 0 {
			size = 1 << 20
		}
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		buf := make([]byte, 32<<10)
		for i := range buf {
			buf[i] = 'y'
		}
		for size > 0 {
			n := min(size, int64(len(buf)))
			if _, err := w.Write(buf[:n]); err != nil {
				return
			}
			size -= n
		}
	})
	m.HandleFunc("GET /sse", func(w http.ResponseWriter, r *http.Request) {
		n, interval := intParam(r, "n", 5), durParam(r, "interval", 100*time.Millisecond)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		rc := http.NewResponseController(w)
		for i := 0; i < n; i++ {
			fmt.Fprintf(w, "id: %d\ndata: %d %s\n\n", i, i, time.Now().Format(time.RFC3339Nano))
			if err := rc.Flush(); err != nil {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(interval):
			}
		}
	})
	m.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		n, interval := intParam(r, "chunks", 5), durParam(r, "interval", 100*time.Millisecond)
		rc := http.NewResponseController(w)
		for i := 0; i < n; i++ {
			fmt.Fprintf(w, "chunk %d\n", i)
			if err := rc.Flush(); err != nil {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(interval):
			}
		}
	})
	m.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			return
		case <-time.After(durParam(r, "delay", time.Second)):
		}
		io.WriteString(w, "slow response done\n")
	})
	m.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
	m.HandleFunc("GET /redirect", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", r.URL.Query().Get("to"))
		if v := r.URL.Query().Get("refresh"); v != "" {
			w.Header().Set("Refresh", v)
		}
		w.WriteHeader(http.StatusFound)
	})
	m.HandleFunc("GET /early-hints", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Add("Link", "</style.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "after the hints\n")
	})
	// /trailers sends a chunked body with a trailer field announced up front.
	m.HandleFunc("GET /trailers", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		io.WriteString(w, "body before the trailer\n")
		http.NewResponseController(w).Flush()
		w.Header().Set("X-Checksum", "abc123")
	})
	// /page, /page.js and /page.css: an uncompressed page of the kind a
	// legacy app serves, for compression checks in a browser. The script
	// reports in #status that it ran and that the stylesheet applied.
	// /page?gzip=1 is compressed by the app itself; /page?cookie=1 sets a
	// cookie.
	m.HandleFunc("GET /page", func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		b.WriteString("<!doctype html>\n<html><head><title>legacy page</title>\n<link rel=\"stylesheet\" href=\"/page.css\">\n</head><body>\n")
		b.WriteString("<h1>Quarterly report</h1><p id=\"status\">script did not run</p>\n")
		for i := range 200 {
			fmt.Fprintf(&b, "<tr><td>row %d</td><td>The legacy application renders this table row in plain HTML.</td></tr>\n", i)
		}
		b.WriteString("<script src=\"/page.js\"></script>\n</body></html>\n")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("ETag", `"page-v1"`)
		if r.URL.Query().Get("cookie") == "1" {
			w.Header().Set("Set-Cookie", "csrf=s3cret; Path=/; HttpOnly")
		}
		if r.URL.Query().Get("gzip") == "1" {
			w.Header().Set("Content-Encoding", "gzip")
			zw := gzip.NewWriter(w)
			io.WriteString(zw, b.String())
			zw.Close()
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
		io.WriteString(w, b.String())
	})
	m.HandleFunc("GET /page.js", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/javascript")
		var b strings.Builder
		for i := range 100 {
			fmt.Fprintf(&b, "// line %d of a script nobody minified, as legacy apps ship them\n", i)
		}
		b.WriteString(`document.getElementById("status").textContent = "script ran; background " + getComputedStyle(document.body).backgroundColor;` + "\n")
		io.WriteString(w, b.String())
	})
	m.HandleFunc("GET /page.css", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/css")
		var b strings.Builder
		for i := range 100 {
			fmt.Fprintf(&b, ".legacy-rule-%d { margin: 0 auto; padding: 4px; font-family: serif; }\n", i)
		}
		b.WriteString("body { background-color: rgb(1, 2, 3); }\n")
		io.WriteString(w, b.String())
	})
	m.HandleFunc("GET /cookie", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Add("Set-Cookie", "session=abc; Path=/; HttpOnly")
		w.Header().Add("Set-Cookie", "pref=dark; Path=/; Secure")
		io.WriteString(w, "cookies set\n")
	})
	// /upgrade answers "Upgrade: echo" (or websocket) with 101 and then
	// echoes every byte back: enough to prove a proxy tunnels upgrades
	// without buffering, without a WebSocket library.
	m.HandleFunc("GET /upgrade", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "" {
			http.Error(w, "want an Upgrade header", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n", r.Header.Get("Upgrade"))
		brw.Flush()
		buf := make([]byte, 4096)
		for {
			n, err := brw.Read(buf)
			if n > 0 {
				if _, werr := conn.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
}

// echo reports the request as the app received it.
func (a *App) echo(w http.ResponseWriter, r *http.Request) {
	n, _ := io.Copy(io.Discard, r.Body)
	writeJSON(w, map[string]any{
		"method": r.Method, "host": r.Host, "path": r.URL.Path, "query": r.URL.RawQuery, "request_uri": r.RequestURI,
		"proto": r.Proto, "remote_addr": r.RemoteAddr, "header": r.Header, "body_bytes": n,
		"content_length": r.ContentLength, "transfer_encoding": r.TransferEncoding,
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func intParam(r *http.Request, name string, def int) int {
	if v, err := strconv.Atoi(r.URL.Query().Get(name)); err == nil && v >= 0 {
		return v
	}
	return def
}

func durParam(r *http.Request, name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(r.URL.Query().Get(name)); err == nil && v >= 0 {
		return v
	}
	return def
}
