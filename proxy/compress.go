package proxy

import (
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
)

// Compression for apps that do not compress: a response the client
// accepts gzip or zstd for is compressed on its way out when it is of a
// compressible type, not tiny, not encoded by the app already, not a
// range, and not marked no-transform. ETag turns weak (the bytes differ,
// the meaning does not; If-None-Match compares weakly, so the app's 304s
// still work), Vary gets Accept-Encoding, Content-Length and
// Accept-Ranges go. The encoders are klauspost/compress's, pooled.
//
// BREACH guard: compression over TLS lets an attacker who can inject text
// into a page learn a secret in the same page from its compressed size.
// Responses that set cookies or answer an authenticated request (one with
// Authorization or Cookie, a client certificate, or forward-auth identity)
// are therefore sent uncompressed unless CompressSecrets.
//
// Brotli is not offered: the only pure-Go encoder (andybalholm/brotli, a
// machine translation of the C code) is too slow to run per response, and
// Caddy keeps it out of its standard encoders for that reason
// (caddyserver/caddy#3704, #5194).

// Encodings outrider can apply.
const (
	encGzip = "gzip"
	encZstd = "zstd"
)

// compressMinSize: a response known to be shorter is sent as it is; below
// it the framing costs more than the saving (Caddy's default is 512).
const compressMinSize = 512

// ParseCompress checks a --compress list.
func ParseCompress(list []string) ([]string, error) {
	var out []string
	for _, e := range list {
		switch e = strings.ToLower(strings.TrimSpace(e)); e {
		case encGzip, encZstd:
			if !contains(out, e) {
				out = append(out, e)
			}
		case "br", "brotli":
			return nil, fmt.Errorf("invalid --compress %q: brotli is not offered (no pure-Go encoder is fast enough per response); pre-compress assets instead, or use gzip,zstd", e)
		default:
			return nil, fmt.Errorf("invalid --compress %q: want gzip, zstd or both", e)
		}
	}
	return out, nil
}

type compressor struct {
	encodings []string // in the order given: ties in Accept-Encoding go to the first
	secrets   bool

	gzips, zstds sync.Pool

	compressed [2]prometheus.Counter // by encoding index
	guarded    prometheus.Counter
	in, out    prometheus.Counter
}

func newCompressor(cfg Config) *compressor {
	if len(cfg.Compress) == 0 {
		return nil
	}
	encodings, _ := ParseCompress(cfg.Compress) // checked by Validate; deduplicated here
	c := &compressor{encodings: encodings, secrets: cfg.CompressSecrets}
	c.gzips.New = func() any {
		w, _ := gzip.NewWriterLevel(nil, 5) // Caddy's level: most of the gain for a fraction of the cost
		return w
	}
	c.zstds.New = func() any {
		// A 1 MiB window keeps each pooled encoder small and is far
		// inside the 8 MiB that browsers accept (RFC 9659).
		w, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(1<<20), zstd.WithLowerEncoderMem(true))
		return w
	}
	const ns, sub = "outrider", "proxy"
	responses := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "compressed_responses_total",
		Help: "Responses compressed by outrider (--compress), by encoding.",
	}, []string{"encoding"})
	c.compressed[0] = responses.WithLabelValues(encGzip)
	c.compressed[1] = responses.WithLabelValues(encZstd)
	c.guarded = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "compress_breach_skips_total",
		Help: "Compressible responses sent uncompressed because they set cookies or answer an authenticated request (BREACH guard; --compress-secrets turns it off).",
	})
	c.in = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "compress_input_bytes_total",
		Help: "Bytes of responses outrider compressed, before compression.",
	})
	c.out = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: ns, Subsystem: sub, Name: "compress_output_bytes_total",
		Help: "Bytes of responses outrider compressed, after compression.",
	})
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(responses, c.guarded, c.in, c.out)
	}
	return c
}

// negotiate returns the encoding to use for r, or "": the best q-value in
// Accept-Encoding among ours (an encoding named outright, else "*"), ties
// to the order given.
func (c *compressor) negotiate(r *http.Request) string {
	if r.Method == http.MethodHead {
		return ""
	}
	var q [2]float64 // by index in c.encodings; -1: not named
	q[0], q[1] = -1, -1
	star := -1.0
	for _, v := range r.Header["Accept-Encoding"] {
		for _, part := range strings.Split(v, ",") {
			name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			name = strings.ToLower(strings.TrimSpace(name))
			w := 1.0
			if p, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
				if f, err := strconv.ParseFloat(p, 64); err == nil {
					w = f
				}
			}
			if name == "*" {
				star = w
			}
			for i, e := range c.encodings {
				if name == e {
					q[i] = w
				}
			}
		}
	}
	best, bestQ := "", 0.0
	for i, e := range c.encodings {
		w := q[i]
		if w < 0 {
			w = star
		}
		if w > bestQ {
			best, bestQ = e, w
		}
	}
	return best
}

// authenticated reports whether r carries credentials: what a BREACH
// attacker would want to learn lives in answers to such requests.
func authenticated(r *http.Request, identity []string) bool {
	if len(r.Header["Authorization"]) > 0 || len(r.Header["Cookie"]) > 0 {
		return true
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return true
	}
	for _, k := range identity {
		if len(r.Header[k]) > 0 {
			return true
		}
	}
	return false
}

// compressWriter compresses a response as it is written, once WriteHeader
// has found it worth compressing.
type compressWriter struct {
	http.ResponseWriter
	c       *compressor
	enc     string
	secret  bool // the request was authenticated
	decided bool
	w       interface {
		io.Writer
		Flush() error
		Close() error
	} // nil: pass through
	n counter
}

// counter counts the compressed bytes on their way to the client.
type counter struct {
	w io.Writer
	n int64
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (cw *compressWriter) WriteHeader(code int) {
	if cw.decided || code < 200 {
		cw.ResponseWriter.WriteHeader(code) // interim responses pass as they are
		return
	}
	cw.decided = true
	hdr := cw.Header()
	if cw.eligible(code, hdr) {
		addVary(hdr) // whatever this client accepts: caches must ask by encoding
		switch {
		case cw.enc == "":
		case !cw.c.secrets && (cw.secret || len(hdr["Set-Cookie"]) > 0):
			cw.c.guarded.Inc()
		default:
			cw.start(hdr)
		}
	}
	cw.ResponseWriter.WriteHeader(code)
}

// eligible reports whether a response could be compressed, whoever asks.
func (cw *compressWriter) eligible(code int, hdr http.Header) bool {
	switch code {
	case http.StatusNoContent, http.StatusNotModified, http.StatusPartialContent:
		return false
	}
	if len(hdr["Content-Encoding"]) > 0 || len(hdr["Content-Range"]) > 0 {
		return false // never twice, never a range
	}
	for _, v := range hdr["Cache-Control"] {
		if strings.Contains(strings.ToLower(v), "no-transform") {
			return false
		}
	}
	if cl := hdr["Content-Length"]; len(cl) == 1 {
		if n, err := strconv.ParseInt(cl[0], 10, 64); err == nil && n < compressMinSize {
			return false
		}
	}
	return compressible(hdr.Get("Content-Type"))
}

// compressible reports whether a media type gains from compression: text,
// JSON, JavaScript, XML, SVG and the like. Streams (event-stream) and
// types that are compressed already (images, video, archives) do not.
func compressible(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	switch {
	case mt == "text/event-stream":
		return false
	case strings.HasPrefix(mt, "text/"), strings.HasSuffix(mt, "+json"), strings.HasSuffix(mt, "+xml"):
		return true
	}
	switch mt {
	case "application/json", "application/javascript", "application/x-javascript", "application/ecmascript",
		"application/xml", "application/xhtml+xml", "application/wasm", "application/graphql-response+json",
		"image/svg+xml", "image/x-icon", "image/vnd.microsoft.icon", "image/bmp",
		"font/ttf", "font/otf", "application/vnd.ms-fontobject", "application/x-font-ttf":
		return true
	}
	return false
}

func addVary(hdr http.Header) {
	for _, v := range hdr["Vary"] {
		for _, tok := range strings.Split(v, ",") {
			if t := strings.TrimSpace(tok); t == "*" || strings.EqualFold(t, "Accept-Encoding") {
				return
			}
		}
	}
	hdr["Vary"] = append(hdr["Vary"], "Accept-Encoding")
}

// start sets the headers of a compressed response and takes an encoder.
func (cw *compressWriter) start(hdr http.Header) {
	hdr["Content-Encoding"] = []string{cw.enc}
	delete(hdr, "Content-Length")
	delete(hdr, "Accept-Ranges")
	if etag := hdr["Etag"]; len(etag) == 1 && !strings.HasPrefix(etag[0], "W/") {
		hdr["Etag"] = []string{"W/" + etag[0]}
	}
	cw.n.w = cw.ResponseWriter
	switch cw.enc {
	case encGzip:
		g := cw.c.gzips.Get().(*gzip.Writer)
		g.Reset(&cw.n)
		cw.w = g
		cw.c.compressed[0].Inc()
	case encZstd:
		z := cw.c.zstds.Get().(*zstd.Encoder)
		z.Reset(&cw.n)
		cw.w = z
		cw.c.compressed[1].Inc()
	}
}

func (cw *compressWriter) Write(p []byte) (int, error) {
	if !cw.decided {
		cw.WriteHeader(http.StatusOK)
	}
	if cw.w == nil {
		return cw.ResponseWriter.Write(p)
	}
	cw.c.in.Add(float64(len(p)))
	return cw.w.Write(p)
}

// FlushError sends what the encoder holds, then flushes the connection:
// streamed responses keep arriving as the app sends them.
func (cw *compressWriter) FlushError() error {
	if cw.w != nil {
		if err := cw.w.Flush(); err != nil {
			return err
		}
	}
	return http.NewResponseController(cw.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the connection beneath.
func (cw *compressWriter) Unwrap() http.ResponseWriter { return cw.ResponseWriter }

// finish ends the compressed stream when the response ended cleanly, and
// returns the encoder to its pool. After a failed response it writes no
// end: a cut body must not look complete.
func (cw *compressWriter) finish(clean bool) {
	if cw.w == nil {
		return
	}
	if clean {
		cw.w.Close()
	}
	cw.c.out.Add(float64(cw.n.n))
	switch w := cw.w.(type) {
	case *gzip.Writer:
		w.Reset(io.Discard)
		cw.c.gzips.Put(w)
	case *zstd.Encoder:
		w.Reset(nil)
		cw.c.zstds.Put(w)
	}
	cw.w = nil
}
