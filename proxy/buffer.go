package proxy

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Request buffering: a body up to BufferRequests is read whole from the
// client before the app is contacted, so that a client uploading at
// 10 KiB/s does not hold a single-threaded app's one worker for minutes.
// It is kept in memory up to BufferMemory and spills to an unlinked
// temporary file past that (nothing is left behind if outrider dies). A
// body that turns out larger than BufferRequests is sent on as it arrives,
// what was read first included; one that declares a larger Content-Length
// is not buffered at all. MaxBodyBytes, the idle timeout and their 413 and
// 408 apply while reading. The app gets a buffered body with a
// Content-Length, never chunked.

// Where a buffered body ended up, the values of the result label of
// outrider_proxy_request_buffers_total.
const (
	bufferedMemory = "memory"   // it fit in --buffer-memory
	bufferedFile   = "file"     // it spilled to a temporary file
	bufferedTooBig = "streamed" // larger than --buffer-requests: streamed after what was read
)

type requestBuffer struct {
	limit, memory int64
	dir           string // for temporary files; "" is os.TempDir
	h             *handler
	results       [3]prometheus.Counter
	held          atomic.Int64 // bytes held now, memory and files
}

func newRequestBuffer(h *handler, cfg Config) *requestBuffer {
	if cfg.BufferRequests <= 0 {
		return nil
	}
	b := &requestBuffer{limit: cfg.BufferRequests, memory: min(cfg.BufferMemory, cfg.BufferRequests), h: h}
	results := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "outrider", Subsystem: "proxy", Name: "request_buffers_total",
		Help: "Request bodies read before the app was contacted (--buffer-requests), by where they were held: memory, file, or streamed (larger than the limit).",
	}, []string{"result"})
	for i, r := range []string{bufferedMemory, bufferedFile, bufferedTooBig} {
		b.results[i] = results.WithLabelValues(r)
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(results, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "outrider", Subsystem: "proxy", Name: "request_buffer_bytes",
			Help: "Bytes of request bodies held now by --buffer-requests, in memory and temporary files.",
		}, func() float64 { return float64(b.held.Load()) }))
	}
	return b
}

// read buffers r's body, replacing r.Body and setting r.ContentLength. It
// reports whether the request goes on; when not, the client has been
// answered. done must be called once the exchange is over.
func (b *requestBuffer) read(rw *respWriter, r *http.Request) (ok bool, done func()) {
	nothing := func() {}
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 || r.ContentLength > b.limit {
		return true, nothing
	}
	h := b.h
	orig := r.Body
	var src io.ReadCloser = orig
	if h.cfg.MaxBodyBytes > 0 {
		src = http.MaxBytesReader(rw.ResponseWriter, src, h.cfg.MaxBodyBytes)
	}
	ib := &idleBody{ReadCloser: src, dl: rw.dl, idle: h.cfg.IdleTimeout}
	body := &bufferedBody{}
	release := func() {
		b.held.Add(-body.size)
		body.closeFile()
		r.Body = orig // net/http looks at the body it gave us after the handler
	}
	// At most limit+1 bytes: one more than the limit says it did not fit.
	want := b.limit + 1
	if r.ContentLength > 0 {
		want = r.ContentLength
	}
	err := body.fill(ib, want, b.memory, b.dir, &b.held)
	// Whatever happened, no read is pending: a deadline left armed would
	// fire under net/http's own reader while the app answers.
	rw.dl.SetReadDeadline(time.Time{})
	if err != nil && err != io.EOF {
		release()
		rw.body = ib // so that classify tells 408, 413 and 400 apart
		h.fail(rw, r, err)
		return false, nothing
	}
	if err == nil && body.size > b.limit {
		// It did not fit: what was read goes first, the rest as it comes.
		b.results[2].Inc()
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(body.reader(), orig), orig}
		r.ContentLength = -1 // sent chunked
		return true, release
	}
	if body.file != nil {
		b.results[1].Inc()
	} else {
		b.results[0].Inc()
	}
	r.Body = io.NopCloser(body.reader())
	r.ContentLength = body.size
	delete(r.Header, "Expect") // the client's 100 Continue has been sent by reading
	return true, release
}

// bufferedBody is a request body held in memory, then a file.
type bufferedBody struct {
	mem  bytes.Buffer
	file *os.File
	size int64
}

// fill reads up to want bytes from src: up to memory of them in memory, the
// rest in a temporary file. It returns io.EOF when src ended first, nil
// when want bytes were read.
func (b *bufferedBody) fill(src io.Reader, want, memory int64, dir string, held *atomic.Int64) error {
	n, err := io.Copy(&b.mem, io.LimitReader(src, min(want, memory)))
	b.size += n
	held.Add(n)
	if err != nil {
		return err
	}
	if n < min(want, memory) {
		return io.EOF
	}
	if b.size == want {
		return nil
	}
	f, err := os.CreateTemp(dir, "outrider-body-*")
	if err != nil {
		return fmt.Errorf("buffering request body: %w", err)
	}
	os.Remove(f.Name()) // unlinked: gone with the last descriptor, whatever happens
	b.file = f
	rest := want - b.size
	n, err = io.Copy(f, io.LimitReader(src, rest))
	b.size += n
	held.Add(n)
	if err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("buffering request body: %w", err)
	}
	if n < rest {
		return io.EOF
	}
	return nil
}

func (b *bufferedBody) reader() io.Reader {
	if b.file == nil {
		return bytes.NewReader(b.mem.Bytes())
	}
	return io.MultiReader(bytes.NewReader(b.mem.Bytes()), b.file)
}

func (b *bufferedBody) closeFile() {
	if b.file != nil {
		b.file.Close()
	}
}

// ParseSize parses a size in bytes: "65536", "64k", "16KiB", "10MB", "1g".
// Suffixes are 1024-based, as nginx's are.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	num := strings.TrimRight(t, "kKmMgGiIbB")
	unit := strings.ToLower(t[len(num):])
	mult := int64(1)
	switch unit {
	case "", "b":
	case "k", "kb", "kib":
		mult = 1 << 10
	case "m", "mb", "mib":
		mult = 1 << 20
	case "g", "gb", "gib":
		mult = 1 << 30
	default:
		return 0, fmt.Errorf("invalid size %q: want bytes, or a number with k, m or g (such as 64k or 10MiB)", s)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("invalid size %q: want bytes, or a number with k, m or g (such as 64k or 10MiB)", s)
	}
	return n * mult, nil
}
