package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Issue #12: `outrider version` in the Docker image said "commit unknown"
// (no .git in the build context). The Dockerfile's own -X flags, with its
// build arguments filled in, must stamp both version and commit. (The
// image itself is not built here: no Docker daemon in CI.)
func TestDockerfileStampsVersionAndCommit(t *testing.T) {
	skipShort(t)
	t.Parallel()
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	args := map[string]string{"VERSION": "v9.8.7", "COMMIT": "0123456789abcdef0123456789abcdef01234567"}
	var x []string
	for _, m := range regexp.MustCompile(`-X (main\.\w+)=\$\{(\w+)\}`).FindAllStringSubmatch(string(b), -1) {
		if !strings.Contains(string(b), "ARG "+m[2]) {
			t.Errorf("Dockerfile uses ${%s} without an ARG %s", m[2], m[2])
		}
		x = append(x, "-X", m[1]+"="+args[m[2]])
	}
	if len(x) != 4 {
		t.Fatalf("Dockerfile -X flags %q, want main.version and main.commit", x)
	}
	bin := filepath.Join(t.TempDir(), "outrider")
	// -race as in TestMain, so only the link step is new.
	build := exec.Command("go", "build", "-race", "-ldflags", strings.Join(x, " "), "-o", bin, "github.com/outrider-dev/outrider/cmd/outrider")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ Version, Commit string }
	if err := json.Unmarshal(out, &v); err != nil || v.Version != args["VERSION"] || v.Commit != args["COMMIT"] {
		t.Errorf("version --json = %s (%v), want version %s and commit %s", out, err, args["VERSION"], args["COMMIT"])
	}
}
