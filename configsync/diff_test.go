package configsync

import (
	"strings"
	"testing"
)

func TestDiff(t *testing.T) {
	old := &Snapshot{Files: map[string]File{
		"app.conf":  {[]byte("a=1\nb=2\nc=3\nd=4\ne=5\nf=6\ng=7\nh=8\n"), 0o644},
		"gone.conf": {[]byte("x\n"), 0o644},
		"mode.conf": {[]byte("same\n"), 0o644},
	}}
	new := &Snapshot{Files: map[string]File{
		"app.conf":  {[]byte("a=1\nb=2\nc=3\nd=40\ne=5\nf=6\ng=7\nh=8\n"), 0o644},
		"new.conf":  {[]byte("y"), 0o600},
		"mode.conf": {[]byte("same\n"), 0o600},
	}}
	want := `--- a/app.conf
+++ b/app.conf
@@ -1,7 +1,7 @@
 a=1
 b=2
 c=3
-d=4
+d=40
 e=5
 f=6
 g=7
deleted file mode 0644
--- a/gone.conf
+++ /dev/null
@@ -1,1 +0,0 @@
-x
old mode 0644
new mode 0600
new file mode 0600
--- /dev/null
+++ b/new.conf
@@ -0,0 +1,1 @@
+y
\ No newline at end of file
`
	if got := Diff(old, new); got != want {
		t.Errorf("Diff() =\n%s\nwant\n%s", got, want)
	}
}

func TestDiffRedactsSecrets(t *testing.T) {
	old := &Snapshot{Files: map[string]File{"app.conf": {[]byte("user=bob\npassword=hunter2\napi_key: abc\n\"client_secret\": \"s1\",\n"), 0o644}}}
	new := &Snapshot{Files: map[string]File{"app.conf": {[]byte("user=alice\npassword=hunter3\napi_key: abd\n\"client_secret\": \"s2\",\n"), 0o644}}}
	got := Diff(old, new)
	for _, secret := range []string{"hunter", "abc", "abd", "s1", "s2"} {
		if strings.Contains(got, secret) {
			t.Errorf("Diff() leaks %q:\n%s", secret, got)
		}
	}
	for _, want := range []string{"-user=bob", "+user=alice", "+password=<redacted>", `+"client_secret": <redacted>`} {
		if !strings.Contains(got, want) {
			t.Errorf("Diff() lacks %q:\n%s", want, got)
		}
	}
}

func TestDiffBinaryAndUnchanged(t *testing.T) {
	a := &Snapshot{Files: map[string]File{"x": {[]byte{0, 1}, 0o644}, "same": {[]byte("s"), 0o644}}}
	b := &Snapshot{Files: map[string]File{"x": {[]byte{0, 2}, 0o644}, "same": {[]byte("s"), 0o644}}}
	if got, want := Diff(a, b), "Binary files a/x and b/x differ\n"; got != want {
		t.Errorf("Diff() = %q, want %q", got, want)
	}
	if got := Diff(a, a); got != "" {
		t.Errorf("Diff(a, a) = %q, want empty", got)
	}
}
