package proxy

import (
	"bytes"
	"testing"

	"golang.org/x/net/http2"
)

// TestH2ConnCountsEmptyFrames: frame headers are followed across reads of
// any size; frames that carry nothing are counted, real ones and their
// payloads are not; a bad preface is caught.
func TestH2ConnCountsEmptyFrames(t *testing.T) {
	var b bytes.Buffer
	b.WriteString(h2Preface)
	fr := http2.NewFramer(&b, nil)
	fr.WriteSettings()
	fr.WriteData(1, false, []byte("real payload with \x00\x00\x00\x00\x00 inside"))
	fr.WriteData(1, false, nil)                                         // empty
	fr.WriteRawFrame(http2.FrameWindowUpdate, 0, 1, []byte{0, 0, 0, 0}) // zero increment
	fr.WriteWindowUpdate(1, 100)
	fr.WriteData(1, true, nil) // empty with END_STREAM: how a body ends, not counted
	stream := b.Bytes()
	for _, step := range []int{1, 2, 3, 7, 9, 64, len(stream)} {
		c := &h2Conn{}
		for i := 0; i < len(stream); i += step {
			if r := c.scan(stream[i:min(i+step, len(stream))]); r != scanOK {
				t.Fatalf("step %d: scan = %d", step, r)
			}
		}
		if c.empty != 2 {
			t.Errorf("step %d: %d empty frames counted, want 2", step, c.empty)
		}
	}
	if r := (&h2Conn{}).scan([]byte("GET / HTTP/1.1\r\n")); r != scanBadPreface {
		t.Errorf("an HTTP/1 request on an h2 connection: scan = %d, want scanBadPreface", r)
	}
}
