package topapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

//go:embed page.html
var pageHTML string

//go:embed openapi.json
var openAPI []byte

// HandlerConfig configures a Handler.
type HandlerConfig struct {
	// Sampler supplies the snapshots. Required.
	Sampler *Sampler
	// TokenFile, when set, holds the bearer token every data request must
	// carry (Authorization: Bearer <token>); surrounding whitespace is
	// ignored. It is read by NewHandler and again by Reload. If empty, no
	// authentication is asked for: keep the listener on loopback.
	TokenFile string
	// Logger receives refused requests at Debug level. If nil, logs are
	// discarded.
	Logger *slog.Logger
}

// Handler serves /top and /top/openapi.json. Mount it at both "/top" and
// "/top/" (any prefix works: it dispatches on the path's last element).
//
// GET /top answers, by the Accept header: JSON (default), a top-like
// text/plain table, or the live text/html page. ?sort=cpu|mem|pid orders the
// processes (default cpu) and ?limit=N keeps the first N; bad values get 400
// with a one-line reason.
//
// With a token, every JSON, text and OpenAPI answer needs it; without it
// the answer is 401 with WWW-Authenticate. The HTML page is the exception:
// it is a fixed asset that holds no data, served without the token so a
// browser can open it; it reads the token from the URL fragment
// (#token=…, never sent to the server), keeps it in sessionStorage and sends
// it with each JSON request. No CORS headers are ever set, so other origins
// cannot read any answer.
type Handler struct {
	s     *Sampler
	file  string
	token atomic.Pointer[[sha256.Size]byte] // nil: no auth
	log   *slog.Logger
}

// NewHandler returns a Handler, reading the token file if one is set.
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	if cfg.Sampler == nil {
		return nil, errors.New("topapi: HandlerConfig.Sampler is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{s: cfg.Sampler, file: cfg.TokenFile, log: cfg.Logger}
	if err := h.Reload(context.Background()); err != nil {
		return nil, err
	}
	return h, nil
}

// Reload re-reads the token file; on failure the previous token stays.
func (h *Handler) Reload(context.Context) error {
	if h.file == "" {
		return nil
	}
	b, err := os.ReadFile(h.file)
	if err != nil {
		return fmt.Errorf("reading token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return fmt.Errorf("reading token file %q: file is empty", h.file)
	}
	sum := sha256.Sum256([]byte(tok))
	h.token.Store(&sum)
	return nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		httpError(w, http.StatusMethodNotAllowed, "only GET is allowed")
		return
	}
	if strings.HasSuffix(r.URL.Path, "/openapi.json") {
		if !h.authorized(w, r) {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(openAPI)
		return
	}
	format := negotiate(r.Header.Get("Accept"))
	if format == formatHTML {
		servePage(w)
		return
	}
	if !h.authorized(w, r) {
		return
	}
	q, err := parseQuery(r)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	snap, err := h.s.Wait(ctx)
	if err != nil {
		w.Header().Set("Retry-After", "1")
		httpError(w, http.StatusServiceUnavailable, "no sample taken yet")
		return
	}
	view := *snap
	view.Processes = q.apply(snap.Processes)
	switch format {
	case formatText:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		writeTable(w, &view)
	default:
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(&view)
	}
}

// RequireToken wraps next so that it answers only requests carrying the
// Handler's bearer token (401 otherwise); without a token file it returns
// next unchanged. "outrider top" puts /metrics behind it, since the
// per-process series name processes too.
func (h *Handler) RequireToken(next http.Handler) http.Handler {
	if h.file == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h.authorized(w, r) {
			next.ServeHTTP(w, r)
		}
	})
}

// authorized reports whether r carries the token (or none is needed), and
// answers 401 when it does not.
func (h *Handler) authorized(w http.ResponseWriter, r *http.Request) bool {
	want := h.token.Load()
	if want == nil {
		return true
	}
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if ok && strings.EqualFold(scheme, "Bearer") {
		// Comparing hashes keeps the time independent of the token's length.
		sum := sha256.Sum256([]byte(strings.TrimSpace(got)))
		if subtle.ConstantTimeCompare(sum[:], want[:]) == 1 {
			return true
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="outrider top", error="invalid_token"`)
	} else {
		w.Header().Set("WWW-Authenticate", `Bearer realm="outrider top"`)
	}
	h.log.Debug("top request refused", "remote_addr", r.RemoteAddr, "status", http.StatusUnauthorized)
	httpError(w, http.StatusUnauthorized, "a valid bearer token is required")
	return false
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	io.WriteString(w, msg+"\n")
}

type format int

const (
	formatJSON format = iota
	formatText
	formatHTML
)

// negotiate picks the format the Accept header prefers most; JSON when it
// names none of them.
func negotiate(accept string) format {
	best, bestQ := formatJSON, 0.0
	for part := range strings.SplitSeq(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		q := 1.0
		if v, ok := params["q"]; ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				q = f
			}
		}
		var f format
		switch mt {
		case "application/json", "*/*", "application/*":
			f = formatJSON
		case "text/plain", "text/*":
			f = formatText
		case "text/html", "application/xhtml+xml":
			f = formatHTML
		default:
			continue
		}
		if q > bestQ {
			best, bestQ = f, q
		}
	}
	return best
}

// query is a parsed ?sort=&limit=.
type query struct {
	sort  string
	limit int // 0: all
}

func parseQuery(r *http.Request) (query, error) {
	v := r.URL.Query()
	q := query{sort: "cpu"}
	if s := v.Get("sort"); s != "" {
		switch s {
		case "cpu", "mem", "pid":
			q.sort = s
		default:
			return q, fmt.Errorf("bad sort %q: want cpu, mem or pid", s)
		}
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return q, fmt.Errorf("bad limit %q: want a positive integer", s)
		}
		q.limit = n
	}
	return q, nil
}

// apply returns a sorted, trimmed copy; procs arrive sorted by CPU.
func (q query) apply(procs []Process) []Process {
	out := slices.Clone(procs)
	switch q.sort {
	case "mem":
		slices.SortStableFunc(out, func(a, b Process) int {
			if a.RSSBytes != b.RSSBytes {
				if a.RSSBytes > b.RSSBytes {
					return -1
				}
				return 1
			}
			return a.PID - b.PID
		})
	case "pid":
		slices.SortFunc(out, func(a, b Process) int { return a.PID - b.PID })
	}
	if q.limit > 0 && len(out) > q.limit {
		out = out[:q.limit]
	}
	if out == nil {
		out = []Process{}
	}
	return out
}

// servePage writes the live page with a fresh CSP nonce: only its own inline
// script and style run, and it may only fetch from its own origin.
func servePage(w http.ResponseWriter) {
	var b [18]byte
	rand.Read(b[:])
	nonce := base64.StdEncoding.EncodeToString(b[:])
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'nonce-"+nonce+"'; style-src 'nonce-"+nonce+
		"'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("X-Frame-Options", "DENY")
	io.WriteString(w, strings.ReplaceAll(pageHTML, "{{NONCE}}", nonce))
}
