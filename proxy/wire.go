package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
)

// The HTTP/1.1 wire format towards the app: outrider writes the request head
// itself and parses the app's response strictly. Anything malformed from the
// app is a protocol error (502); nothing the app sends is relayed unparsed.

// Limits on what the app may send.
const (
	maxResponseHeaderBytes = 64 << 10 // status line and headers together
	maxChunkLineBytes      = 4 << 10  // one chunk-size line, extensions included
	maxInterim             = 16       // 1xx responses before the final one
)

// errMalformed wraps every parse failure of the app's response.
var errMalformed = errors.New("malformed response from upstream")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errMalformed}, args...)...)
}

// respHead is a parsed response head. Header values are slices of one
// string per head, so that parsing allocates a handful of times however
// many fields there are.
type respHead struct {
	major, minor int
	code         int
	header       http.Header

	contentLength int64 // -1: not given
	chunked       bool
	close         bool // the app wants the connection closed after this response
	keepAlive     int  // seconds from Keep-Alive: timeout=N, 0 if absent
	keepAliveMax  int  // requests left from Keep-Alive: max=N, -1 if absent
	upgrade       string
	connTokens    []string // other headers the app named in Connection
}

// readLine returns one line without its terminator (CRLF or a bare LF, as
// RFC 9112 §2.2 lets a recipient accept). The bytes are valid until the
// next read; a line longer than limit is an error.
func readLine(br *bufio.Reader, limit int, scratch *[]byte) ([]byte, error) {
	line, _, err := readLineCR(br, limit, scratch)
	return line, err
}

// readLineCR is readLine that also reports whether the line ended in CRLF.
func readLineCR(br *bufio.Reader, limit int, scratch *[]byte) ([]byte, bool, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		buf := append((*scratch)[:0], line...)
		for err == bufio.ErrBufferFull {
			if len(buf) > limit {
				return nil, false, malformed("line longer than %d bytes", limit)
			}
			line, err = br.ReadSlice('\n')
			buf = append(buf, line...)
		}
		*scratch = buf
		line = buf
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, false, err
	}
	if len(line) > limit {
		return nil, false, malformed("line longer than %d bytes", limit)
	}
	line = line[:len(line)-1]
	cr := false
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line, cr = line[:n-1], true
	}
	return line, cr, nil
}

// readHeadBytes reads a response head up to and including the empty line
// and returns it with each line ending in a bare LF. It does not interpret
// anything but line ends. On error it returns what it had read.
func readHeadBytes(br *bufio.Reader, dst []byte) ([]byte, error) {
	var scratch []byte
	for {
		line, err := readLine(br, maxResponseHeaderBytes, &scratch)
		if err != nil {
			return dst, err
		}
		if len(dst)+len(line) > maxResponseHeaderBytes {
			return nil, malformed("head larger than %d bytes", maxResponseHeaderBytes)
		}
		dst = append(dst, line...)
		dst = append(dst, '\n')
		if len(line) == 0 {
			return dst, nil
		}
	}
}

// isInterim reports whether a head read by readHeadBytes is a 1xx other
// than 101, before it is parsed.
func isInterim(raw []byte) bool {
	return len(raw) > 11 && raw[9] == '1' && !(raw[10] == '0' && raw[11] == '1')
}

// parseHead parses a head read by readHeadBytes into h, putting header
// fields in dst (the ResponseWriter's header map for a final response).
// Hop-by-hop fields are interpreted and left out of dst.
func parseHead(raw []byte, h *respHead, dst http.Header) error {
	*h = respHead{contentLength: -1, keepAliveMax: -1, header: dst}
	s := string(raw) // the one copy: every value below is a slice of it
	nl := indexByte(s, '\n')
	if err := parseStatusLine(s[:nl], h); err != nil {
		return err
	}
	s = s[nl+1:]
	var (
		clSeen, teSeen, keepAlive bool
		lastKey                   string
	)
	// One backing array for every single-valued field: a field's slice
	// is capped, so that a second value appends elsewhere.
	values := make([]string, 0, strings.Count(s, "\n"))
	for {
		nl = indexByte(s, '\n')
		line := s[:nl]
		s = s[nl+1:]
		if line == "" {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			// obs-fold: RFC 9112 §5.2 lets a proxy replace it with a space.
			if lastKey == "" {
				return malformed("continuation line before any header")
			}
			v := trimOWS(line)
			if !validValue(v) {
				return malformed("invalid header value")
			}
			if vv := dst[lastKey]; len(vv) > 0 && v != "" {
				if last := &vv[len(vv)-1]; *last == "" {
					*last = v
				} else {
					*last += " " + v
				}
			}
			continue
		}
		colon := indexByte(line, ':')
		if colon <= 0 {
			return malformed("header line without a name")
		}
		name := line[:colon]
		if !validName(name) {
			return malformed("invalid header name %q", name)
		}
		value := trimOWS(line[colon+1:])
		if !validValue(value) {
			return malformed("invalid value for header %q", name)
		}
		key := canonicalKey(name)
		lastKey = ""
		switch key {
		case "Content-Length":
			n, ok := parseContentLength(value)
			if !ok || clSeen && n != h.contentLength {
				return malformed("invalid or conflicting Content-Length %q", value)
			}
			clSeen, h.contentLength = true, n
			continue
		case "Transfer-Encoding":
			if teSeen || !equalFold(value, "chunked") || h.minor == 0 {
				// HTTP/1.0 has no transfer codings (RFC 9112 §6.1): a
				// chunked 1.0 response is read as bytes by some clients
				// and as chunks by others, so it is refused.
				return malformed("unsupported Transfer-Encoding %q", value)
			}
			teSeen, h.chunked = true, true
			continue
		case "Connection":
			forEachToken(value, func(tok string) {
				switch {
				case equalFold(tok, "close"):
					h.close = true
				case equalFold(tok, "keep-alive"):
					keepAlive = true
				case equalFold(tok, "upgrade"):
				default:
					h.connTokens = append(h.connTokens, canonicalKey(tok))
				}
			})
			continue
		case "Keep-Alive":
			parseKeepAlive(value, h)
			continue
		case "Upgrade":
			h.upgrade = value
			continue
		case "Proxy-Connection", "Te":
			continue
		}
		if vv, ok := dst[key]; ok {
			dst[key] = append(vv, value)
		} else {
			values = append(values, value)
			dst[key] = values[len(values)-1 : len(values) : len(values)]
		}
		lastKey = key
	}
	if h.chunked {
		// RFC 9112 §6.3: Transfer-Encoding overrides Content-Length; such
		// a message may be an attack, so the connection is not reused.
		if clSeen {
			h.close = true
		}
		h.contentLength = -1
	}
	if h.minor == 0 && !keepAlive {
		h.close = true // HTTP/1.0 keeps the connection only when asked to
	}
	for _, k := range h.connTokens {
		delete(dst, k)
	}
	return nil
}

func parseStatusLine(line string, h *respHead) error {
	// HTTP/1.x SP 3DIGIT SP reason (the reason may be empty, and the
	// space before it missing, as many servers send).
	if len(line) < 12 || line[:7] != "HTTP/1." || line[8] != ' ' {
		return malformed("invalid status line %q", truncate(line))
	}
	switch line[7] {
	case '0', '1':
		h.major, h.minor = 1, int(line[7]-'0')
	default:
		return malformed("unsupported version in %q", truncate(line))
	}
	c := line[9:12]
	if c[0] < '1' || c[0] > '5' || !isDigit(c[1]) || !isDigit(c[2]) || len(line) > 12 && line[12] != ' ' {
		return malformed("invalid status code in %q", truncate(line))
	}
	h.code = int(c[0]-'0')*100 + int(c[1]-'0')*10 + int(c[2]-'0')
	if !validValue(line[min(len(line), 13):]) {
		return malformed("invalid reason phrase")
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func parseKeepAlive(v string, h *respHead) {
	forEachToken(v, func(tok string) {
		name, val, _ := cut(tok, '=')
		n, err := strconv.Atoi(trimOWS(val))
		if err != nil || n < 0 {
			return
		}
		switch {
		case equalFold(trimOWS(name), "timeout"):
			h.keepAlive = n
		case equalFold(trimOWS(name), "max"):
			h.keepAliveMax = n
		}
	})
}

// bodyAllowed reports whether a response with this code to this method
// carries a body (RFC 9112 §6.3).
func bodyAllowed(method string, code int) bool {
	return method != http.MethodHead && code >= 200 && code != 204 && code != 304
}

// chunkedReader decodes a chunked body strictly: hex sizes, extensions
// ignored, CRLF after every chunk's data, and trailer fields at the end,
// which it puts in trailer.
type chunkedReader struct {
	br      *bufio.Reader
	left    int64 // bytes of the current chunk still to read
	done    bool
	err     error
	trailer http.Header
	scratch []byte
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.left == 0 {
		if c.done {
			return 0, io.EOF
		}
		if err := c.nextChunk(); err != nil {
			c.err = err
			return 0, err
		}
		if c.done {
			return 0, io.EOF
		}
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.br.Read(p)
	c.left -= int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err == nil && c.left == 0 {
		err = c.chunkEnd()
	}
	if err != nil {
		c.err = err
	}
	return n, err
}

// chunkEnd consumes the CRLF after a chunk's data. Chunk framing is held
// to CRLF, never a bare LF: the leniency is a known smuggling vector.
func (c *chunkedReader) chunkEnd() error {
	b, err := c.br.ReadByte()
	if err == nil && b == '\r' {
		b, err = c.br.ReadByte()
		if err == nil && b == '\n' {
			return nil
		}
	}
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	if err == nil {
		return malformed("missing CRLF after chunk data")
	}
	return err
}

func (c *chunkedReader) nextChunk() error {
	line, cr, err := readLineCR(c.br, maxChunkLineBytes, &c.scratch)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if !cr {
		return malformed("chunk size line ends in a bare LF")
	}
	size := line
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		size = line[:i]
	}
	size = bytes.TrimRight(size, " \t")
	if len(size) == 0 || len(size) > 15 {
		return malformed("invalid chunk size %q", truncate(string(line)))
	}
	var n int64
	for _, b := range size {
		d, ok := hexVal(b)
		if !ok {
			return malformed("invalid chunk size %q", truncate(string(line)))
		}
		n = n<<4 | int64(d)
	}
	if n > 0 {
		c.left = n
		return nil
	}
	c.done = true
	return c.readTrailer()
}

func (c *chunkedReader) readTrailer() error {
	total := 0
	for {
		line, cr, err := readLineCR(c.br, maxResponseHeaderBytes, &c.scratch)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return err
		}
		if !cr {
			return malformed("trailer line ends in a bare LF")
		}
		if len(line) == 0 {
			return nil
		}
		if total += len(line); total > maxResponseHeaderBytes {
			return malformed("trailer larger than %d bytes", maxResponseHeaderBytes)
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !validName(string(name)) {
			return malformed("invalid trailer line")
		}
		v := trimOWS(string(value))
		if !validValue(v) {
			return malformed("invalid trailer value")
		}
		key := canonicalKey(string(name))
		switch key {
		case "Content-Length", "Transfer-Encoding", "Trailer", "Host", "Connection":
			continue // fields that may not be trailers (RFC 9110 §6.5.1)
		}
		if c.trailer == nil {
			c.trailer = http.Header{}
		}
		c.trailer[key] = append(c.trailer[key], v)
	}
}

func hexVal(b byte) (byte, bool) {
	switch {
	case '0' <= b && b <= '9':
		return b - '0', true
	case 'a' <= b && b <= 'f':
		return b - 'a' + 10, true
	case 'A' <= b && b <= 'F':
		return b - 'A' + 10, true
	}
	return 0, false
}

// chunkedWriter encodes a request body for the app.
type chunkedWriter struct{ w *bufio.Writer }

func (c chunkedWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var hex [16]byte
	c.w.Write(strconv.AppendInt(hex[:0], int64(len(p)), 16))
	c.w.WriteString("\r\n")
	c.w.Write(p)
	_, err := c.w.WriteString("\r\n")
	return len(p), err
}

// close writes the last chunk and the trailer fields.
func (c chunkedWriter) close(trailer http.Header) error {
	c.w.WriteString("0\r\n")
	for k, vv := range trailer {
		for _, v := range vv {
			if validName(k) && validValue(v) {
				c.w.WriteString(k)
				c.w.WriteString(": ")
				c.w.WriteString(v)
				c.w.WriteString("\r\n")
			}
		}
	}
	_, err := c.w.WriteString("\r\n")
	return err
}

// Small string helpers that do not allocate.

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

func cut(s string, c byte) (string, string, bool) {
	if i := indexByte(s, c); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// forEachToken calls f with each element of a comma-separated list, trimmed.
func forEachToken(v string, f func(string)) {
	for v != "" {
		var tok string
		tok, v, _ = cut(v, ',')
		if tok = trimOWS(tok); tok != "" {
			f(tok)
		}
	}
}

// validName reports whether s is a non-empty RFC 9110 token.
func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// validValue reports whether s holds only field-value bytes: visible
// ASCII, obs-text, space and tab.
func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func parseContentLength(v string) (int64, bool) {
	if v == "" || len(v) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(v); i++ {
		if !isDigit(v[i]) {
			return 0, false
		}
		n = n*10 + int64(v[i]-'0')
	}
	return n, true
}

// canonicalKey returns the canonical form of a header name, without
// allocating when the name is already canonical or is a common one.
func canonicalKey(name string) string {
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			return textproto.CanonicalMIMEHeaderKey(name)
		}
		upper = c == '-'
	}
	return name
}
