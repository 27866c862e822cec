package configsync

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// DefaultMode is the mode of files whose source gives none.
const DefaultMode fs.FileMode = 0o644

// Limits on what a source may deliver.
const (
	maxBundleBytes = 32 << 20
	maxFiles       = 10000
	maxPathLen     = 1024
)

// File is one file of a [Snapshot].
type File struct {
	Data []byte
	Mode fs.FileMode // permission bits only
}

// Snapshot is one complete version of the config files: every file, not a
// delta. Files maps a clean relative path ("app.conf", "conf.d/a.conf") to
// its content.
type Snapshot struct {
	// Version is the source's name for this version (bundle "version",
	// ETag, etcd revision). Empty means "use the content hash".
	Version string
	Files   map[string]File
}

// Hash returns a hex SHA-256 over every path, mode and content: the
// identity of a version. Content hashes, not change signals, decide whether
// anything changed.
func (s *Snapshot) Hash() string {
	names := s.names()
	h := sha256.New()
	var buf [12]byte
	for _, n := range names {
		f := s.Files[n]
		io.WriteString(h, n)
		binary.BigEndian.PutUint32(buf[:4], uint32(f.Mode.Perm()))
		binary.BigEndian.PutUint64(buf[4:], uint64(len(f.Data)))
		h.Write([]byte{0})
		h.Write(buf[:])
		h.Write(f.Data)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// DisplayVersion is Version, or "sha256:" and the first 12 hex digits of
// the hash when the source gave none.
func (s *Snapshot) DisplayVersion() string {
	if s.Version != "" {
		return s.Version
	}
	return "sha256:" + s.Hash()[:12]
}

func (s *Snapshot) names() []string {
	names := make([]string, 0, len(s.Files))
	for n := range s.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// check applies the rules every snapshot must pass before it touches disk:
// at least one file, safe paths, no file that is also a directory, sane
// modes. Any failure rejects the whole snapshot.
func (s *Snapshot) check() error {
	if len(s.Files) == 0 {
		return ErrEmpty
	}
	if len(s.Files) > maxFiles {
		return fmt.Errorf("%w: %d files (limit %d)", ErrInvalidBundle, len(s.Files), maxFiles)
	}
	var errs []error
	for _, n := range s.names() {
		if err := CheckPath(n); err != nil {
			errs = append(errs, err)
			continue
		}
		if m := s.Files[n].Mode; m&^fs.ModePerm != 0 {
			errs = append(errs, fmt.Errorf("%w: file %q: mode %#o has more than permission bits", ErrInvalidBundle, n, uint32(m)))
		}
		// "a" and "a/b" cannot both be files.
		for d := path.Dir(n); d != "."; d = path.Dir(d) {
			if _, ok := s.Files[d]; ok {
				errs = append(errs, fmt.Errorf("%w: %q is both a file and the directory of %q", ErrInvalidBundle, d, n))
			}
		}
	}
	return errors.Join(errs...)
}

// CheckPath reports whether name is a safe file path relative to the target
// directory: not empty, relative, already clean (no "//", "./", trailing
// "/"), no ".." element, no element starting with ".." (reserved for the
// versioned layout), no NUL, valid UTF-8. Errors wrap [ErrUnsafePath].
func CheckPath(name string) error {
	bad := func(why string) error { return fmt.Errorf("%w: %q: %s", ErrUnsafePath, name, why) }
	switch {
	case name == "":
		return bad("empty path")
	case len(name) > maxPathLen:
		return bad("path too long")
	case !utf8.ValidString(name):
		return bad("not valid UTF-8")
	case strings.ContainsRune(name, 0):
		return bad("contains NUL")
	case strings.HasPrefix(name, "/"):
		return bad("absolute path")
	}
	for _, el := range strings.Split(name, "/") {
		switch {
		case el == "..":
			return bad(`".." leaves the directory`)
		case strings.HasPrefix(el, ".."):
			return bad(`names starting with ".." are reserved`)
		case len(el) > 255:
			return bad("path element too long")
		}
	}
	if path.Clean(name) != name || name == "." {
		return bad("not a clean relative path")
	}
	return nil
}

// ParseBundle parses a JSON bundle:
//
//	{"version": "v7", "files": {"app.conf": "…", "tls/key.pem": {"content": "…", "mode": "0600"}}}
//
// A file value is a string (mode 0644) or an object with "content", an
// optional octal "mode" and an optional "encoding" ("base64"). Trailing data,
// truncation, unknown value shapes, unsafe paths and an empty file set all
// reject the whole bundle.
func ParseBundle(data []byte) (*Snapshot, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, ErrEmpty
	}
	if len(data) > maxBundleBytes {
		return nil, fmt.Errorf("%w: %d bytes (limit %d)", ErrInvalidBundle, len(data), maxBundleBytes)
	}
	var raw struct {
		Version json.RawMessage            `json:"version"`
		Files   map[string]json.RawMessage `json:"files"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalidBundle, jsonErr(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrInvalidBundle)
	}
	if raw.Files == nil {
		return nil, fmt.Errorf("%w: no \"files\" object", ErrInvalidBundle)
	}
	s := &Snapshot{Files: make(map[string]File, len(raw.Files))}
	if len(raw.Version) > 0 && string(raw.Version) != "null" {
		var v any
		if err := json.Unmarshal(raw.Version, &v); err != nil {
			return nil, fmt.Errorf("%w: version: %s", ErrInvalidBundle, jsonErr(err))
		}
		switch v := v.(type) {
		case string:
			s.Version = v
		case float64:
			s.Version = string(raw.Version)
		default:
			return nil, fmt.Errorf("%w: version must be a string or a number", ErrInvalidBundle)
		}
		if len(s.Version) > 128 || strings.ContainsAny(s.Version, "\n\r") {
			return nil, fmt.Errorf("%w: version too long or multi-line", ErrInvalidBundle)
		}
	}
	for name, v := range raw.Files {
		f, err := parseBundleFile(v)
		if err != nil {
			return nil, fmt.Errorf("%w: file %q: %v", ErrInvalidBundle, name, err)
		}
		s.Files[name] = f
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	return s, nil
}

func parseBundleFile(v json.RawMessage) (File, error) {
	var str string
	if err := json.Unmarshal(v, &str); err == nil {
		return File{Data: []byte(str), Mode: DefaultMode}, nil
	}
	var obj struct {
		Content  *string `json:"content"`
		Mode     string  `json:"mode"`
		Encoding string  `json:"encoding"`
	}
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&obj); err != nil {
		return File{}, errors.New(`want a string or {"content": "…", "mode": "0644", "encoding": "base64"}`)
	}
	if obj.Content == nil {
		return File{}, errors.New(`missing "content"`)
	}
	f := File{Data: []byte(*obj.Content), Mode: DefaultMode}
	switch obj.Encoding {
	case "":
	case "base64":
		b, err := base64.StdEncoding.DecodeString(*obj.Content)
		if err != nil {
			return File{}, errors.New("content is not valid base64")
		}
		f.Data = b
	default:
		return File{}, fmt.Errorf("encoding %q: want base64 or nothing", obj.Encoding)
	}
	if obj.Mode != "" {
		m, err := strconv.ParseUint(obj.Mode, 8, 32)
		if err != nil || m > 0o777 {
			return File{}, fmt.Errorf("mode %q: want octal permission bits like 0644", obj.Mode)
		}
		f.Mode = fs.FileMode(m)
	}
	return f, nil
}

// jsonErr turns a decoding error into a short message without echoing the
// input (it may hold secrets).
func jsonErr(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "truncated JSON"
	case errors.As(err, &se):
		return fmt.Sprintf("JSON syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("JSON value at byte %d has the wrong type (want %s)", te.Offset, te.Type)
	}
	return "not a JSON object"
}
