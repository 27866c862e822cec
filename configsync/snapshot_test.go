package configsync

import (
	"errors"
	"io/fs"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCheckPath(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr error
	}{
		{"plain", "app.conf", nil},
		{"nested", "conf.d/a.conf", nil},
		{"dotfile", ".env", nil},
		{"dots inside", "a..b", nil},
		{"empty", "", ErrUnsafePath},
		{"absolute", "/etc/passwd", ErrUnsafePath},
		{"dotdot", "../x", ErrUnsafePath},
		{"dotdot inside", "a/../../x", ErrUnsafePath},
		{"dotdot end", "a/..", ErrUnsafePath},
		{"reserved data", "..data", ErrUnsafePath},
		{"reserved version dir", "..2026_01_01/x", ErrUnsafePath},
		{"unclean double slash", "a//b", ErrUnsafePath},
		{"unclean dot", "./a", ErrUnsafePath},
		{"trailing slash", "a/", ErrUnsafePath},
		{"dot", ".", ErrUnsafePath},
		{"nul", "a\x00b", ErrUnsafePath},
		{"bad utf8", "a\xffb", ErrUnsafePath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckPath(tt.in)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("CheckPath(%q) = %v, want %v", tt.in, err, tt.wantErr)
			}
		})
	}
}

func TestParseBundle(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    *Snapshot
		wantErr error
	}{
		{"strings", `{"version":"v1","files":{"a.conf":"x=1\n","d/b.conf":"y"}}`,
			&Snapshot{Version: "v1", Files: map[string]File{"a.conf": {[]byte("x=1\n"), 0o644}, "d/b.conf": {[]byte("y"), 0o644}}}, nil},
		{"numeric version", `{"version":7,"files":{"a":"x"}}`, &Snapshot{Version: "7", Files: map[string]File{"a": {[]byte("x"), 0o644}}}, nil},
		{"object with mode", `{"files":{"key.pem":{"content":"k","mode":"0600"}}}`, &Snapshot{Files: map[string]File{"key.pem": {[]byte("k"), 0o600}}}, nil},
		{"base64", `{"files":{"bin":{"content":"AAE=","encoding":"base64"}}}`, &Snapshot{Files: map[string]File{"bin": {[]byte{0, 1}, 0o644}}}, nil},
		{"empty file allowed", `{"files":{"a":""}}`, &Snapshot{Files: map[string]File{"a": {[]byte{}, 0o644}}}, nil},
		{"empty body", ``, nil, ErrEmpty},
		{"whitespace body", " \n", nil, ErrEmpty},
		{"no files", `{"files":{}}`, nil, ErrEmpty},
		{"files missing", `{"version":"1"}`, nil, ErrInvalidBundle},
		{"truncated", `{"files":{"a":"x`, nil, ErrInvalidBundle},
		{"trailing data", `{"files":{"a":"x"}} {}`, nil, ErrInvalidBundle},
		{"not an object", `[1,2]`, nil, ErrInvalidBundle},
		{"html error page", `<html>502</html>`, nil, ErrInvalidBundle},
		{"absolute path", `{"files":{"/etc/passwd":"x"}}`, nil, ErrUnsafePath},
		{"escape", `{"files":{"ok":"1","../x":"x"}}`, nil, ErrUnsafePath},
		{"file and dir", `{"files":{"a":"1","a/b":"2"}}`, nil, ErrInvalidBundle},
		{"bad mode", `{"files":{"a":{"content":"x","mode":"4755"}}}`, nil, ErrInvalidBundle},
		{"mode not octal", `{"files":{"a":{"content":"x","mode":"rw"}}}`, nil, ErrInvalidBundle},
		{"missing content", `{"files":{"a":{"mode":"0644"}}}`, nil, ErrInvalidBundle},
		{"unknown field", `{"files":{"a":{"content":"x","owner":"root"}}}`, nil, ErrInvalidBundle},
		{"number content", `{"files":{"a":1}}`, nil, ErrInvalidBundle},
		{"bad base64", `{"files":{"a":{"content":"!!","encoding":"base64"}}}`, nil, ErrInvalidBundle},
		{"multi-line version", `{"version":"a\nb","files":{"a":"x"}}`, nil, ErrInvalidBundle},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBundle([]byte(tt.in))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseBundle(%q) error = %v, want %v", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseBundle(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseBundle(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestHashCoversNamesModesAndContent(t *testing.T) {
	base := &Snapshot{Files: map[string]File{"a": {[]byte("1"), 0o644}, "b": {[]byte("2"), 0o644}}}
	variants := map[string]*Snapshot{
		"content": {Files: map[string]File{"a": {[]byte("1"), 0o644}, "b": {[]byte("3"), 0o644}}},
		"mode":    {Files: map[string]File{"a": {[]byte("1"), 0o600}, "b": {[]byte("2"), 0o644}}},
		"name":    {Files: map[string]File{"a": {[]byte("1"), 0o644}, "c": {[]byte("2"), 0o644}}},
		"split":   {Files: map[string]File{"a": {[]byte("12"), 0o644}, "b": {[]byte(""), 0o644}}},
	}
	for name, v := range variants {
		if v.Hash() == base.Hash() {
			t.Errorf("changing the %s did not change the hash", name)
		}
	}
	same := &Snapshot{Version: "other", Files: map[string]File{"b": {[]byte("2"), 0o644}, "a": {[]byte("1"), fs.FileMode(0o644)}}}
	if same.Hash() != base.Hash() {
		t.Error("hash depends on map order or version")
	}
}
