package configsync

import (
	"bytes"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"
)

// secretLine matches "key = value" and "key: value" lines (also quoted, as
// in JSON or YAML) whose key looks like it holds a secret.
var secretLine = regexp.MustCompile(`(?i)^(\s*["']?[a-z0-9_.\-]*(?:pass(?:word|wd|phrase)?|pwd|secret|token|api[_-]?key|private[_-]?key|access[_-]?key|credential|auth)[a-z0-9_.\-]*["']?\s*[:=]\s*)\S.*$`)

// redact replaces the value of a secret-looking key with <redacted>.
func redact(line string) string {
	return secretLine.ReplaceAllString(line, "${1}<redacted>")
}

// Diff returns a unified diff (3 lines of context) from old to new, with the
// values of secret-looking keys redacted: a changed secret shows as a
// changed line whose value reads <redacted>. old may be nil (nothing live).
// Binary files are named, not shown.
func Diff(old, new *Snapshot) string {
	if old == nil {
		old = &Snapshot{}
	}
	if new == nil {
		new = &Snapshot{}
	}
	names := map[string]bool{}
	for n := range old.Files {
		names[n] = true
	}
	for n := range new.Files {
		names[n] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	var b strings.Builder
	for _, n := range sorted {
		of, inOld := old.Files[n]
		nf, inNew := new.Files[n]
		if inOld && inNew && bytes.Equal(of.Data, nf.Data) && of.Mode == nf.Mode {
			continue
		}
		a, bname := "a/"+n, "b/"+n
		if !inOld {
			a = "/dev/null"
		}
		if !inNew {
			bname = "/dev/null"
		}
		switch {
		case !inOld:
			fmt.Fprintf(&b, "new file mode %04o\n", uint32(nf.Mode))
		case !inNew:
			fmt.Fprintf(&b, "deleted file mode %04o\n", uint32(of.Mode))
		case of.Mode != nf.Mode:
			fmt.Fprintf(&b, "old mode %04o\nnew mode %04o\n", uint32(of.Mode), uint32(nf.Mode))
		}
		if bytes.Equal(of.Data, nf.Data) {
			continue
		}
		if isBinary(of.Data) || isBinary(nf.Data) {
			fmt.Fprintf(&b, "Binary files %s and %s differ\n", a, bname)
			continue
		}
		fmt.Fprintf(&b, "--- %s\n+++ %s\n", a, bname)
		b.WriteString(unified(splitLines(of.Data), splitLines(nf.Data), 3))
	}
	return b.String()
}

func isBinary(b []byte) bool { return bytes.IndexByte(b, 0) >= 0 || !utf8.Valid(b) }

// splitLines splits keeping no terminators; a missing final newline is
// marked like diff(1) does.
func splitLines(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	s := string(b)
	noEOL := !strings.HasSuffix(s, "\n")
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if noEOL {
		lines[len(lines)-1] += "\n\\ No newline at end of file"
	}
	return lines
}

type edit struct {
	op   byte // ' ', '-', '+'
	line string
}

// lineEdits returns an edit script from a to b: common prefix and suffix
// trimmed, then an LCS table for the middle when small enough, else the
// middle is replaced whole.
func lineEdits(a, b []string) []edit {
	var pre, suf int
	for pre < len(a) && pre < len(b) && a[pre] == b[pre] {
		pre++
	}
	for suf < len(a)-pre && suf < len(b)-pre && a[len(a)-1-suf] == b[len(b)-1-suf] {
		suf++
	}
	var out []edit
	for _, l := range a[:pre] {
		out = append(out, edit{' ', l})
	}
	am, bm := a[pre:len(a)-suf], b[pre:len(b)-suf]
	if len(am)*len(bm) > 4_000_000 {
		for _, l := range am {
			out = append(out, edit{'-', l})
		}
		for _, l := range bm {
			out = append(out, edit{'+', l})
		}
	} else {
		n, m := len(am), len(bm)
		lcs := make([][]int32, n+1)
		for i := range lcs {
			lcs[i] = make([]int32, m+1)
		}
		for i := n - 1; i >= 0; i-- {
			for j := m - 1; j >= 0; j-- {
				if am[i] == bm[j] {
					lcs[i][j] = lcs[i+1][j+1] + 1
				} else {
					lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
				}
			}
		}
		i, j := 0, 0
		for i < n || j < m {
			switch {
			case i < n && j < m && am[i] == bm[j]:
				out = append(out, edit{' ', am[i]})
				i, j = i+1, j+1
			case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
				out = append(out, edit{'-', am[i]})
				i++
			default:
				out = append(out, edit{'+', bm[j]})
				j++
			}
		}
	}
	for _, l := range a[len(a)-suf:] {
		out = append(out, edit{' ', l})
	}
	return out
}

// unified formats the edits from a to b as hunks with ctx lines of context.
func unified(a, b []string, ctx int) string {
	edits := lineEdits(a, b)
	var sb strings.Builder
	for i := 0; i < len(edits); {
		if edits[i].op == ' ' {
			i++
			continue
		}
		// A hunk starts ctx lines before the first change and runs until a
		// stretch of more than 2*ctx unchanged lines.
		start := max(0, i-ctx)
		end := i
		for k := i; k < len(edits); k++ {
			if edits[k].op != ' ' {
				end = k + 1
			} else if k-end >= 2*ctx {
				break
			}
		}
		end = min(len(edits), end+ctx)
		aStart, bStart := 1, 1
		for _, e := range edits[:start] {
			if e.op != '+' {
				aStart++
			}
			if e.op != '-' {
				bStart++
			}
		}
		var aLen, bLen int
		for _, e := range edits[start:end] {
			if e.op != '+' {
				aLen++
			}
			if e.op != '-' {
				bLen++
			}
		}
		if aLen == 0 {
			aStart--
		}
		if bLen == 0 {
			bStart--
		}
		fmt.Fprintf(&sb, "@@ -%d,%d +%d,%d @@\n", aStart, aLen, bStart, bLen)
		for _, e := range edits[start:end] {
			sb.WriteByte(e.op)
			line, marker, hasMarker := strings.Cut(e.line, "\n")
			sb.WriteString(redact(line))
			sb.WriteByte('\n')
			if hasMarker {
				sb.WriteString(marker + "\n")
			}
		}
		i = end
	}
	return sb.String()
}
