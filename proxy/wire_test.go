package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// parsed is a response as outrider's parser or net/http's client sees it.
type parsed struct {
	Code    int
	Header  http.Header
	Body    string
	Trailer http.Header
	Close   bool
}

// parseOurs reads one response to a GET with outrider's parser.
func parseOurs(raw string) (parsed, error) {
	br := bufio.NewReader(strings.NewReader(raw))
	var p parsed
	var h respHead
	for {
		head, err := readHeadBytes(br, nil)
		if err != nil {
			return p, err
		}
		p.Header = http.Header{}
		if err := parseHead(head, &h, p.Header); err != nil {
			return p, err
		}
		if h.code >= 200 {
			break
		}
	}
	p.Code, p.Close = h.code, h.close
	var body io.Reader = br
	var chunks *chunkedReader
	switch {
	case !bodyAllowed(http.MethodGet, h.code):
		body = strings.NewReader("")
	case h.chunked:
		chunks = &chunkedReader{br: br}
		body = chunks
	case h.contentLength >= 0:
		body = io.LimitReader(br, h.contentLength)
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return p, err
	}
	if bodyAllowed(http.MethodGet, h.code) && h.contentLength >= 0 && int64(len(b)) < h.contentLength {
		return p, io.ErrUnexpectedEOF
	}
	p.Body = string(b)
	if chunks != nil {
		p.Trailer = chunks.trailer
	}
	// outrider passes the Trailer declaration on to the client, where
	// net/http turns it into resp.Trailer's keys.
	p.Header.Del("Trailer")
	return p, nil
}

// parseGo reads the same response with net/http's client.
func parseGo(raw string) (parsed, error) {
	req, _ := http.NewRequest(http.MethodGet, "http://app/", nil)
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(raw)), req)
	if err != nil {
		return parsed{}, err
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return parsed{}, err
	}
	h := resp.Header.Clone()
	// What a proxy must not relay (RFC 9110 §7.6.1), and framing.
	for _, v := range h["Connection"] {
		for _, tok := range strings.Split(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" {
				h.Del(tok)
			}
		}
	}
	for _, k := range []string{"Connection", "Keep-Alive", "Content-Length", "Transfer-Encoding", "Te", "Proxy-Connection", "Upgrade"} {
		h.Del(k)
	}
	var trailer http.Header
	if len(resp.Trailer) > 0 {
		trailer = resp.Trailer
	}
	return parsed{Code: resp.StatusCode, Header: h, Body: string(b), Trailer: trailer, Close: resp.Close}, nil
}

// responseCorpus holds responses an app might send, good and bad.
var responseCorpus = []struct {
	name, raw string
	wantErr   bool // outrider refuses it (502)
}{
	{"content-length", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", false},
	{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", false},
	{"chunked with extension and trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n", false},
	{"close delimited", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", false},
	{"http/1.0 no length", "HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<p>old</p>", false},
	{"http/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", false},
	{"no reason phrase", "HTTP/1.1 204\r\n\r\n", false},
	{"304 with length", "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\nETag: \"x\"\r\n\r\n", false},
	{"bare LF line ends (old CGI)", "HTTP/1.1 200 OK\nContent-Length: 3\n\nabc", false},
	{"repeated headers", "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nVary: Accept\r\nvary: Cookie\r\nContent-Length: 0\r\n\r\n", false},
	{"lowercase names", "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-powered-by: PHP/5.2\r\ncontent-length: 1\r\n\r\nx", false},
	{"duplicate equal lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", false},
	{"obs-fold joined", "HTTP/1.1 200 OK\r\nX-Long: first\r\n  second\r\nContent-Length: 0\r\n\r\n", false},
	{"keep-alive params", "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5, max=100\r\nContent-Length: 0\r\n\r\n", false},
	{"interim then final", "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false},
	{"empty value", "HTTP/1.1 200 OK\r\nX-Empty:\r\nContent-Length: 0\r\n\r\n", false},
	{"obs-text value", "HTTP/1.1 200 OK\r\nX-Latin: caf\xe9\r\nContent-Length: 0\r\n\r\n", false},
	{"te and cl: te wins, no reuse", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", false},

	{"conflicting lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", true},
	{"negative length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", true},
	{"length with sign", "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", true},
	{"unknown transfer coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx", true},
	{"two transfer codings", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", true},
	{"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok", true},
	{"no colon", "HTTP/1.1 200 OK\r\nnot a header\r\n\r\n", true},
	{"control byte in value", "HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\nContent-Length: 0\r\n\r\n", true},
	{"bare CR in value", "HTTP/1.1 200 OK\r\nX-Bad: a\rb\r\nContent-Length: 0\r\n\r\n", true},
	{"bad status code", "HTTP/1.1 2x0 OK\r\n\r\n", true},
	{"status code 600", "HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n", true},
	{"status code 099", "HTTP/1.1 099 Odd\r\n\r\n", true},
	{"http/2 status line", "HTTP/2 200 OK\r\n\r\n", true},
	{"garbage", "hello world\r\n\r\n", true},
	{"truncated head", "HTTP/1.1 200 OK\r\nContent-Len", true},
	{"truncated body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", true},
	{"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", true},
	{"chunk without CRLF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", true},
	{"truncated chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", true},
	{"chunk size overflow", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n", true},
	{"continuation first", "HTTP/1.1 200 OK\r\n folded\r\nContent-Length: 0\r\n\r\n", true},
}

// TestResponseParserAgreesWithNetHTTP is the differential test: every
// response outrider accepts, net/http's client reads the same way; every
// one outrider refuses is one net/http refuses too, or one it reads in a
// way a proxy must not relay (noted in the corpus).
func TestResponseParserAgreesWithNetHTTP(t *testing.T) {
	for _, tt := range responseCorpus {
		t.Run(tt.name, func(t *testing.T) {
			ours, oerr := parseOurs(tt.raw)
			if (oerr != nil) != tt.wantErr {
				t.Fatalf("outrider: err = %v, want error %v", oerr, tt.wantErr)
			}
			theirs, gerr := parseGo(stripInterim(tt.raw))
			if oerr != nil {
				if gerr == nil {
					t.Logf("net/http accepts what outrider refuses (%v): %+v", oerr, theirs)
				}
				return
			}
			if gerr != nil {
				t.Fatalf("outrider accepts what net/http refuses: %v", gerr)
			}
			if strings.Contains(tt.raw, "Content-Length") && strings.Contains(tt.raw, "Transfer-Encoding") {
				// RFC 9112 §6.3: such a message may be an attack; outrider
				// does not reuse the connection, net/http does.
				theirs.Close = true
			}
			if d := cmp.Diff(theirs, ours); d != "" {
				t.Errorf("outrider and net/http disagree (-net/http +outrider):\n%s", d)
			}
		})
	}
}

// stripInterim drops 1xx heads, which http.ReadResponse returns as the
// response itself.
func stripInterim(raw string) string {
	for strings.HasPrefix(raw, "HTTP/1.1 1") && !strings.HasPrefix(raw, "HTTP/1.1 101") {
		i := strings.Index(raw, "\r\n\r\n")
		if i < 0 {
			return raw
		}
		raw = raw[i+4:]
	}
	return raw
}

// FuzzParseResponse: outrider's parser never panics, and what it accepts
// net/http reads alike (code, headers, body, trailers).
func FuzzParseResponse(f *testing.F) {
	for _, tt := range responseCorpus {
		f.Add(tt.raw)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		ours, err := parseOurs(raw)
		if err != nil {
			return
		}
		if strings.Contains(raw, "HTTP/1.1 1") || strings.Contains(raw, "HTTP/1.0 1") {
			return // interim responses: net/http returns them as final
		}
		theirs, gerr := parseGo(raw)
		if gerr != nil {
			t.Fatalf("outrider accepts %q, net/http refuses it: %v", raw, gerr)
		}
		// net/http trims more whitespace around values and drops empty
		// trailing lines differently; compare what a client would see.
		if ours.Code != theirs.Code || ours.Body != theirs.Body {
			t.Fatalf("%q: outrider %d %q, net/http %d %q", raw, ours.Code, ours.Body, theirs.Code, theirs.Body)
		}
		theirs.Header.Del("Trailer")
		// obs-fold: net/http keeps a space for a blank continuation line.
		for _, h := range []http.Header{theirs.Header, ours.Header} {
			for _, vv := range h {
				for i := range vv {
					vv[i] = strings.Join(strings.Fields(vv[i]), " ")
				}
			}
		}
		if d := cmp.Diff(theirs.Header, ours.Header); d != "" {
			t.Fatalf("%q: headers differ (-net/http +outrider):\n%s", raw, d)
		}
	})
}

func TestParseHeadConnectionLife(t *testing.T) {
	tests := []struct {
		name            string
		raw             string
		close           bool
		keepAlive, kMax int
	}{
		{"1.1 default", "HTTP/1.1 200 OK\r\n\r\n", false, 0, -1},
		{"1.1 close", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", true, 0, -1},
		{"1.0 default closes", "HTTP/1.0 200 OK\r\n\r\n", true, 0, -1},
		{"1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n\r\n", false, 0, -1},
		{"node", "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n", false, 5, -1},
		{"apache", "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5, max=99\r\nConnection: Keep-Alive\r\n\r\n", false, 5, 99},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := readHeadBytes(bufio.NewReader(strings.NewReader(tt.raw)), nil)
			if err != nil {
				t.Fatal(err)
			}
			var h respHead
			hdr := http.Header{}
			if err := parseHead(raw, &h, hdr); err != nil {
				t.Fatal(err)
			}
			if h.close != tt.close || h.keepAlive != tt.keepAlive || h.keepAliveMax != tt.kMax {
				t.Errorf("close=%v keepAlive=%d max=%d, want %v %d %d", h.close, h.keepAlive, h.keepAliveMax, tt.close, tt.keepAlive, tt.kMax)
			}
			if len(hdr) != 0 {
				t.Errorf("hop-by-hop headers leaked into the client's headers: %v", hdr)
			}
		})
	}
}

func TestChunkedWriterRoundTrip(t *testing.T) {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	cw := chunkedWriter{w}
	cw.Write([]byte("hello "))
	cw.Write(nil)
	cw.Write([]byte("world"))
	cw.close(http.Header{"X-Sum": {"1"}})
	w.Flush()
	cr := &chunkedReader{br: bufio.NewReader(&b)}
	got, err := io.ReadAll(cr)
	if err != nil || string(got) != "hello world" || cr.trailer.Get("X-Sum") != "1" {
		t.Fatalf("round trip = %q, %v, trailer %v", got, err, cr.trailer)
	}
	if _, err := cr.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("read after the end: %v, want EOF", err)
	}
}

// TestAccessLogLinesMatchSlog: the hand-written access-log lines read back
// as slog's own JSON and text handlers would write the same record.
func TestAccessLogLinesMatchSlog(t *testing.T) {
	e := &accessEntry{scheme: "https", method: "GET", host: "app.example", path: "/caf\xc3\xa9 \"q\"\x01\xff",
		proto: "HTTP/1.1", remote: "[::1]:1234", status: 200, bytes: 1024, duration: 0.000123, upstream: 1.5}
	now := time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.UTC)
	attrs := []any{"component", "proxy", "scheme", e.scheme, "method", e.method, "host", e.host, "path", e.path,
		"proto", e.proto, "status", e.status, "bytes", e.bytes, "duration_seconds", e.duration,
		"upstream_duration_seconds", e.upstream, "remote_addr", e.remote}
	for _, jsonForm := range []bool{true, false} {
		var ours, theirs bytes.Buffer
		(&AccessLog{W: &ours, JSON: jsonForm}).write(now, e)
		var h slog.Handler = slog.NewTextHandler(&theirs, nil)
		if jsonForm {
			h = slog.NewJSONHandler(&theirs, nil)
		}
		r := slog.NewRecord(now, slog.LevelInfo, "request", 0)
		r.Add(attrs...)
		h.Handle(t.Context(), r)
		if jsonForm {
			var a, b map[string]any
			if err := json.Unmarshal(ours.Bytes(), &a); err != nil {
				t.Fatalf("our JSON line %q: %v", ours.String(), err)
			}
			json.Unmarshal(theirs.Bytes(), &b)
			if d := cmp.Diff(b, a); d != "" {
				t.Errorf("JSON line differs from slog's (-slog +ours):\n%s", d)
			}
			continue
		}
		if ours.String() != theirs.String() {
			t.Errorf("text line\n%q\nslog writes\n%q", ours.String(), theirs.String())
		}
	}
}
