package integration

// Issue #14: --buffer-requests keeps a slow upload from holding a
// single-worker app.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// slowBody yields n chunks of size bytes, one every interval, and closes
// started after the second.
type slowBody struct {
	n, size  int
	interval time.Duration
	started  chan struct{}
	sent     int
}

func (b *slowBody) Read(p []byte) (int, error) {
	if b.sent == b.n {
		return 0, io.EOF
	}
	if b.sent > 0 {
		time.Sleep(b.interval) // the slow client itself, not a wait for a condition
	}
	b.sent++
	if b.sent == 2 {
		close(b.started)
	}
	return copy(p, bytes.Repeat([]byte{'u'}, min(b.size, len(p)))), nil
}

func TestBufferedUploadDoesNotHoldSingleWorkerApp(t *testing.T) {
	skipShort(t)
	t.Parallel()
	for _, tc := range []struct {
		name     string
		flags    []string
		buffered bool
	}{
		{"buffered", []string{"--buffer-requests", "1m", "--buffer-memory", "16k"}, true},
		{"streaming, the default", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			app := startApp(t, "--workers", "1")
			e := outriderFor(t, app.addr("addr"), tc.flags...)
			// 20 chunks of 4 KiB, 100 ms apart: a 2 s upload at 40 KiB/s.
			body := &slowBody{n: 20, size: 4 << 10, interval: 100 * time.Millisecond, started: make(chan struct{})}
			upload := make(chan response, 1)
			go func() {
				req, _ := http.NewRequest(http.MethodPost, "https://app.example/echo", body)
				resp, err := e.h1.Do(req)
				if err != nil {
					upload <- response{err: err}
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				upload <- response{code: resp.StatusCode, body: string(b), at: time.Now()}
			}()
			<-body.started
			if !tc.buffered {
				// Streaming: the upload has the app's one worker.
				waitFor(t, 10*time.Second, func() error {
					var v struct{ Busy int }
					getJSON(t, plainClient, "http://"+app.addr("addr")+"/-/busy", &v)
					if v.Busy != 1 {
						return fmt.Errorf("app busy %d", v.Busy)
					}
					return nil
				})
			}
			start := time.Now()
			normal := getAsync(e.h2, "https://app.example/echo?normal")
			n := <-normal
			u := <-upload
			if n.err != nil || n.code != 200 || u.err != nil || u.code != 200 {
				t.Fatalf("normal %d %v, upload %d %v", n.code, n.err, u.code, u.err)
			}
			t.Logf("normal request answered in %v, %v before the upload's answer", n.at.Sub(start).Round(time.Millisecond), u.at.Sub(n.at).Round(time.Millisecond))
			if tc.buffered {
				if !n.at.Before(u.at) || n.at.Sub(start) > time.Second {
					t.Errorf("normal request answered after %v, at %v; want at once, before the upload's answer at %v", n.at.Sub(start), n.at, u.at)
				}
				var got echo
				json.Unmarshal([]byte(u.body), &got)
				if got.BodyBytes != 80<<10 || got.ContentLength != 80<<10 || got.TransferEncoding != nil {
					t.Errorf("app got %d bytes, Content-Length %d, Transfer-Encoding %v; want 81920 with a Content-Length", got.BodyBytes, got.ContentLength, got.TransferEncoding)
				}
				if v := metricValue(metricsText(t, e.admin), `outrider_proxy_request_buffers_total{result="file"}`); v != 1 {
					t.Errorf("request_buffers_total{file} = %v, want 1 (80 KiB past --buffer-memory 16k)", v)
				}
			} else if n.at.Sub(start) < time.Second {
				// 18 chunks were still to come, 1.8 s: the app's worker was
				// the upload's until then.
				t.Errorf("without buffering the normal request was answered in %v; the test shows nothing", n.at.Sub(start))
			}
		})
	}
}

func TestBufferRequestsLimits(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := startProxy(t, "--buffer-requests", "32k", "--max-body-bytes", "65536")
	post := func(size int, chunked bool) (int, echo) {
		t.Helper()
		var r io.Reader = bytes.NewReader(bytes.Repeat([]byte{'b'}, size))
		if chunked {
			r = io.MultiReader(r) // hides the length: sent chunked
		}
		resp, err := e.h1.Post("https://app.example/echo", "application/octet-stream", r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got echo
		json.NewDecoder(resp.Body).Decode(&got)
		return resp.StatusCode, got
	}
	for _, tc := range []struct {
		name        string
		size        int
		chunked     bool
		wantCode    int
		wantLength  int64 // what the app saw as Content-Length
		wantChunked bool
	}{
		{"small, in memory", 1 << 10, true, 200, 1 << 10, false},
		{"chunked past the limit streams", 48 << 10, true, 200, -1, true},
		{"declared past the limit streams", 40 << 10, false, 200, 40 << 10, false},
		{"past --max-body-bytes", 100 << 10, true, 413, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, got := post(tc.size, tc.chunked)
			if code != tc.wantCode {
				t.Fatalf("POST %d bytes = %d, want %d", tc.size, code, tc.wantCode)
			}
			if code != 200 {
				return
			}
			if got.BodyBytes != int64(tc.size) || got.ContentLength != tc.wantLength || (got.TransferEncoding != nil) != tc.wantChunked {
				t.Errorf("app got %d bytes, Content-Length %d, Transfer-Encoding %v; want %d, %d, chunked %v",
					got.BodyBytes, got.ContentLength, got.TransferEncoding, tc.size, tc.wantLength, tc.wantChunked)
			}
		})
	}
	m := metricsText(t, e.admin)
	// The body past --max-body-bytes was streamed too, once past 32k, and
	// cut at 64 KiB.
	for result, want := range map[string]float64{"memory": 1, "streamed": 2, "file": 0} {
		if v := metricValue(m, `outrider_proxy_request_buffers_total{result="`+result+`"}`); v != want {
			t.Errorf("request_buffers_total{%s} = %v, want %v", result, v, want)
		}
	}
	if !strings.Contains(m, "outrider_proxy_request_buffer_bytes 0") {
		t.Errorf("request_buffer_bytes is not back to 0:\n%s", m)
	}
}
