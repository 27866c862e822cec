package proxy

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
)

func TestNegotiateEncoding(t *testing.T) {
	c := newCompressor(Config{Compress: []string{"zstd", "gzip", "zstd"}})
	tests := []struct{ accept, want string }{
		{"", ""},
		{"gzip", "gzip"},
		{"gzip, deflate, br, zstd", "zstd"},
		{"GZIP;q=0.9, zstd;q=0.8", "gzip"},
		{"zstd;q=0, *", "gzip"},
		{"*;q=0.5", "zstd"},
		{"gzip;q=0, zstd;q=0", ""},
		{"identity", ""},
		{"br", ""},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if tt.accept != "" {
			r.Header.Set("Accept-Encoding", tt.accept)
		}
		if got := c.negotiate(r); got != tt.want {
			t.Errorf("negotiate(%q) = %q, want %q", tt.accept, got, tt.want)
		}
	}
}

func TestCompressible(t *testing.T) {
	for ct, want := range map[string]bool{
		"text/html; charset=utf-8": true, "application/json": true, "application/problem+json": true,
		"image/svg+xml": true, "application/javascript": true, "text/css": true,
		"text/event-stream": false, "image/png": false, "application/zip": false, "": false, "nonsense/": false,
	} {
		if got := compressible(ct); got != want {
			t.Errorf("compressible(%q) = %v, want %v", ct, got, want)
		}
	}
}

// A response cut by a failure must not end like a complete one: no gzip
// trailer is written, so the client's decoder reports the truncation.
func TestCompressWriterCutResponseHasNoEnd(t *testing.T) {
	c := newCompressor(Config{Compress: []string{"gzip"}})
	for _, clean := range []bool{true, false} {
		rec := httptest.NewRecorder()
		cw := &compressWriter{ResponseWriter: rec, c: c, enc: encGzip}
		cw.Header().Set("Content-Type", "text/plain")
		cw.Header().Set("ETag", `"v1"`)
		body := strings.Repeat("compressible text ", 200)
		io.WriteString(cw, body)
		cw.FlushError()
		cw.finish(clean)
		if rec.Header().Get("Content-Encoding") != "gzip" || rec.Header().Get("Etag") != `W/"v1"` || rec.Header().Get("Vary") != "Accept-Encoding" {
			t.Fatalf("headers %v", rec.Header())
		}
		zr, err := gzip.NewReader(bytes.NewReader(rec.Body.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(zr)
		if clean && (err != nil || string(got) != body) {
			t.Errorf("clean: decoded %d bytes, %v; want the body", len(got), err)
		}
		if !clean && err == nil {
			t.Errorf("cut: decoded %d bytes without error; want an unexpected EOF", len(got))
		}
	}
}
