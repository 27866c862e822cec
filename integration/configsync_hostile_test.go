package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/outrider-dev/outrider/internal/dirattack"
)

// Issue #16: the app shares --dir and may be compromised. While configsync
// follows a stream of new versions, a hostile neighbour keeps planting
// symlinks out of --dir at every name configsync uses; nothing outside is
// ever written or removed, and once the attack stops the next version goes
// live as usual.
func TestConfigsyncHostileNeighbourCannotWriteOutsideDir(t *testing.T) {
	skipShort(t)
	t.Parallel()
	e := newCSEnv(t)
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, before := dirattack.Outside(t, e.dir)
	e.api.publish("v0", map[string]string{"app.conf": "v0", "conf.d/a.conf": "v0"})
	cs := startOutrider(t, e.args("--drift-interval", "50ms")...)
	admin := cs.addr("admin_addr")
	waitStatus(t, admin, func(st csStatus) error {
		if st.AppliedVersion != "v0" {
			return fmt.Errorf("applied %q, want v0", st.AppliedVersion)
		}
		return nil
	})

	attacker := dirattack.Start(t, e.dir, out, "app.conf", "conf.d/", "new.conf")
	const versions = 40
	for i := 1; i <= versions; i++ {
		v := fmt.Sprint("v", i)
		files := map[string]string{"app.conf": v, "conf.d/a.conf": v}
		if i%2 == 0 {
			files["new.conf"] = v
		}
		e.api.publish(v, files)
		// Paced by configsync itself: the next version once this one was
		// fetched (and applied or refused).
		waitStatus(t, admin, func(st csStatus) error {
			if st.DesiredVersion != v {
				return fmt.Errorf("desired %q, want %s", st.DesiredVersion, v)
			}
			return nil
		})
	}
	plants, rounds := attacker.Stop()
	t.Logf("%d versions published against %d symlinks planted in %d rounds", versions, plants, rounds)
	if plants < versions {
		t.Errorf("only %d symlinks planted: the attack did not run", plants)
	}
	if diff := cmp.Diff(before, dirattack.Tree(t, out)); diff != "" {
		t.Errorf("something outside --dir changed (-before +after):\n%s", diff)
	}

	e.api.publish("final", map[string]string{"app.conf": "final", "conf.d/a.conf": "final"})
	waitStatus(t, admin, func(st csStatus) error {
		// applied, then not_modified on the next poll: either is success.
		if st.AppliedVersion != "final" || st.LastError != "" {
			return fmt.Errorf("applied %q (%s: %s), want final", st.AppliedVersion, st.LastResult, st.LastError)
		}
		return nil
	})
	for _, f := range []string{"app.conf", "conf.d/a.conf"} {
		if b, err := os.ReadFile(filepath.Join(e.dir, f)); err != nil || string(b) != "final" {
			t.Errorf("%s = %q, %v; want final", f, b, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(e.dir, "new.conf")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("new.conf, not in the final version, is still there: %v", err)
	}
	cs.stop()
}

// Issue #16: a --state-dir that leads into --dir through a symlink is
// refused like the plain path, with one line and exit 2, before anything is
// written; so is --keep-versions 0.
func TestConfigsyncRefusesStateDirThroughSymlink(t *testing.T) {
	skipShort(t)
	t.Parallel()
	base := t.TempDir()
	dir := filepath.Join(base, "shared")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Symlink(dir, filepath.Join(base, "state-link"))
	for _, tt := range []struct {
		name  string
		extra []string
		want  string
	}{
		{"plain", []string{"--state-dir", filepath.Join(dir, "state")}, "must not be inside dir"},
		{"through a symlink", []string{"--state-dir", filepath.Join(base, "state-link", "state")}, "through a symlink"},
		{"keep none", []string{"--state-dir", filepath.Join(base, "state"), "--keep-versions", "0"}, "--keep-versions 0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"configsync", "--source", "http://127.0.0.1:1/config", "--dir", dir}, tt.extra...)
			cmd := exec.Command(bins.outrider, args...)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Fatalf("outrider %q = %v, want exit 2; stderr %q", args, err, stderr.String())
			}
			msg := strings.TrimSpace(stderr.String())
			if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, tt.want) {
				t.Errorf("stderr %q: want one line containing %q", msg, tt.want)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 0 {
				t.Errorf("dir written to despite the refusal: %v", entries)
			}
		})
	}
}
