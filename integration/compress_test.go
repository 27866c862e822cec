package integration

// Issue #14: --compress, checked by what real clients decode: curl and
// headless Chromium.

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// rawGet GETs path over HTTP/2 without the transport's own decompression
// and returns status, headers and the body as sent.
func rawGet(t *testing.T, e *proxyEnv, path string, hdr ...string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "https://app.example"+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if req.Header.Get("Accept-Encoding") == "" {
		req.Header.Set("Accept-Encoding", "identity") // else Go's transport adds gzip and decodes
	}
	resp, err := e.h2.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func decode(t *testing.T, enc string, b []byte) []byte {
	t.Helper()
	var r io.Reader
	switch enc {
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	default:
		return b
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decoding %s: %v", enc, err)
	}
	return out
}

func TestCompressResponses(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t, "--compress", "zstd,gzip")
	_, plainHdr, plain := rawGet(t, e, "/page")
	if plainHdr.Get("Content-Encoding") != "" || plainHdr.Get("Vary") != "Accept-Encoding" {
		t.Errorf("identity: Content-Encoding %q, Vary %q; want none and Accept-Encoding", plainHdr.Get("Content-Encoding"), plainHdr.Get("Vary"))
	}
	for _, tc := range []struct{ accept, want string }{
		{"gzip", "gzip"},
		{"zstd", "zstd"},
		{"gzip, deflate, br, zstd", "zstd"}, // a tie goes to the first of --compress
		{"gzip;q=1, zstd;q=0.5", "gzip"},
		{"zstd;q=0, *", "gzip"},
		{"br", ""},
	} {
		t.Run(tc.accept, func(t *testing.T) {
			code, hdr, body := rawGet(t, e, "/page", "Accept-Encoding", tc.accept)
			if code != 200 || hdr.Get("Content-Encoding") != tc.want {
				t.Fatalf("Accept-Encoding %q: %d, Content-Encoding %q; want %q", tc.accept, code, hdr.Get("Content-Encoding"), tc.want)
			}
			if got := decode(t, tc.want, body); !bytes.Equal(got, plain) {
				t.Fatalf("decoded %d bytes differ from the %d uncompressed ones", len(got), len(plain))
			}
			if tc.want == "" {
				return
			}
			t.Logf("%s: %d → %d bytes (%.1f%%)", tc.want, len(plain), len(body), 100*float64(len(body))/float64(len(plain)))
			if hdr.Get("Etag") != `W/"page-v1"` || hdr.Get("Vary") != "Accept-Encoding" || hdr.Get("Content-Length") != "" {
				t.Errorf("ETag %q, Vary %q, Content-Length %q; want W/\"page-v1\", Accept-Encoding, none",
					hdr.Get("Etag"), hdr.Get("Vary"), hdr.Get("Content-Length"))
			}
		})
	}

	// Never twice, never a range, never secrets, never what does not gain.
	for _, tc := range []struct {
		name, path string
		hdr        []string
		wantEnc    string
	}{
		{"app compressed it already", "/page?gzip=1", nil, "gzip"},
		{"sets a cookie (BREACH)", "/page?cookie=1", nil, ""},
		{"authenticated request (BREACH)", "/page", []string{"Cookie", "session=abc"}, ""},
		{"authorization (BREACH)", "/page", []string{"Authorization", "Bearer x"}, ""},
		{"too small", "/cookie", nil, ""},
		{"not text", "/big?size=100000", nil, "zstd"}, // text/plain: sniffed by Go, compressible
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, hdr, body := rawGet(t, e, tc.path, append([]string{"Accept-Encoding", "zstd"}, tc.hdr...)...)
			if code != 200 || hdr.Get("Content-Encoding") != tc.wantEnc {
				t.Fatalf("%s: %d, Content-Encoding %q; want %q", tc.path, code, hdr.Get("Content-Encoding"), tc.wantEnc)
			}
			if tc.path == "/page?gzip=1" {
				if got := decode(t, "gzip", body); !bytes.Equal(got, plain) {
					t.Errorf("the app's own gzip was changed: decodes to %d bytes", len(got))
				}
			}
		})
	}
	m := metricsText(t, e.admin)
	if v := metricValue(m, "outrider_proxy_compress_breach_skips_total"); v != 3 {
		t.Errorf("compress_breach_skips_total = %v, want 3", v)
	}
	in, out := metricValue(m, "outrider_proxy_compress_input_bytes_total"), metricValue(m, "outrider_proxy_compress_output_bytes_total")
	t.Logf("outrider compressed %v bytes into %v (%.1f%%)", in, out, 100*out/in)
	if in <= 0 || out <= 0 || out >= in {
		t.Errorf("compress bytes in %v, out %v", in, out)
	}
}

func TestCompressSecretsOverridesBREACHGuard(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t, "--compress", "gzip", "--compress-secrets")
	if _, hdr, _ := rawGet(t, e, "/page?cookie=1", "Accept-Encoding", "gzip", "Cookie", "session=abc"); hdr.Get("Content-Encoding") != "gzip" {
		t.Errorf("with --compress-secrets: Content-Encoding %q, want gzip", hdr.Get("Content-Encoding"))
	}
}

// curl --compressed decodes what outrider sends, in both encodings.
func TestCompressWithCurl(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t, "--compress", "zstd,gzip")
	_, _, plain := rawGet(t, e, "/page")
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"default (curl offers zstd)", []string{"--compressed"}, "zstd"},
		{"gzip only", []string{"--compressed", "-H", "Accept-Encoding: gzip"}, "gzip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			w := curl(t, e, append(tc.args, "-D", "-", "-o", out, "-w", "size_download=%{size_download}\n", "https://app.example/page")...)
			if !strings.Contains(strings.ToLower(w), "content-encoding: "+tc.want) {
				t.Fatalf("curl %v: headers lack Content-Encoding %s:\n%s", tc.args, tc.want, w)
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatalf("curl decoded %d bytes, want the page's %d", len(got), len(plain))
			}
			var size int
			if i := strings.Index(w, "size_download="); i >= 0 {
				size, _ = strconv.Atoi(strings.TrimSpace(w[i+len("size_download="):]))
			}
			t.Logf("curl %s: %d bytes on the wire for a %d-byte page (%.1f%%)", tc.want, size, len(plain), 100*float64(size)/float64(len(plain)))
		})
	}
}

// Headless Chromium loads a page, its script and its stylesheet through
// outrider compressed (zstd: it offers gzip, deflate, br, zstd), and they
// work: the script ran and saw the stylesheet's colour.
func TestCompressedPageInChromium(t *testing.T) {
	skipShort(t)
	t.Parallel()
	chromium := needTool(t, "chromium")
	e := startProxy(t, "--compress", "zstd,gzip")
	url := "https://app.example:" + portOnly(e.https) + "/page"
	page := devtoolsPage(t, chromium, url, "--ignore-certificate-errors", "--host-resolver-rules=MAP app.example 127.0.0.1")
	waitFor(t, 20*time.Second, func() error {
		if s := page.eval(t, `document.getElementById("status") ? document.getElementById("status").textContent : ""`); s != "script ran; background rgb(1, 2, 3)" {
			return fmt.Errorf("status %q", s)
		}
		return nil
	})
	// The browser's own account of what came compressed.
	sizes := page.eval(t, `[performance.getEntriesByType("navigation")[0], ...performance.getEntriesByType("resource")].filter(
		e => /\/page(\.js|\.css)?$/.test(e.name)).map(
		e => e.name.split("/").pop() + " " + e.encodedBodySize + "/" + e.decodedBodySize).join("; ")`)
	t.Logf("Chromium, encoded/decoded body bytes: %s", sizes)
	if parts := strings.Split(sizes, "; "); len(parts) != 3 {
		t.Errorf("Chromium fetched %q; want the page, its script and its stylesheet", sizes)
	}
	for _, part := range strings.Split(sizes, "; ") {
		var name string
		var enc, dec int
		if n, _ := fmt.Sscanf(part, "%s %d/%d", &name, &enc, &dec); n != 3 || enc <= 0 || enc >= dec {
			t.Errorf("%q: want a compressed body smaller than its decoded size", part)
		}
	}
	m := metricsText(t, e.admin)
	if v := metricValue(m, `outrider_proxy_compressed_responses_total{encoding="zstd"}`); v < 3 {
		t.Errorf("compressed_responses_total{zstd} = %v, want ≥ 3 (page, script, stylesheet)", v)
	}
}
