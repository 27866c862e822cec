package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// The Kubernetes manifests configure outrider by flags and environment
// variables; a renamed flag or twin would leave them silently ignored (an
// unknown variable is not an error). Every flag and OUTRIDER_ variable they
// use must exist for the container's subcommand.
func TestManifestsUseRealFlagsAndTwins(t *testing.T) {
	files, _ := filepath.Glob("../../deploy/kubernetes/*/*.yaml")
	more, _ := filepath.Glob("../../deploy/kubernetes/overlays/*/*.yaml")
	files = append(files, more...)
	type container struct {
		Name  string
		Image string
		Args  []string
		Env   []struct{ Name string }
	}
	var doc struct {
		Kind string
		Spec struct {
			Template struct {
				Spec struct {
					InitContainers []container `json:"initContainers"`
					Containers     []container
				}
			}
		}
	}
	flagLine := regexp.MustCompile(`(?m)^  --(\S+)`)
	envLine := regexp.MustCompile(`(?m)^        env (\S+)$`)
	checked := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, part := range strings.Split(string(b), "\n---\n") {
			if err := yaml.Unmarshal([]byte(part), &doc); err != nil || doc.Kind != "Deployment" {
				continue
			}
			for _, c := range append(doc.Spec.Template.Spec.InitContainers, doc.Spec.Template.Spec.Containers...) {
				if len(c.Args) == 0 || (c.Image != "" && !strings.Contains(c.Image, "outrider")) {
					continue
				}
				help := helpOf(t, c.Args[0])
				flags, envs := map[string]bool{}, map[string]bool{}
				for _, m := range flagLine.FindAllStringSubmatch(help, -1) {
					flags[m[1]] = true
				}
				for _, m := range envLine.FindAllStringSubmatch(help, -1) {
					envs[m[1]] = true
				}
				for _, a := range c.Args[1:] {
					name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
					if !flags[name] {
						t.Errorf("%s: container %s: %q is not a flag of outrider %s", f, c.Name, a, c.Args[0])
					}
				}
				for _, e := range c.Env {
					if strings.HasPrefix(e.Name, "OUTRIDER_") && !envs[e.Name] {
						t.Errorf("%s: container %s: %s is not a variable of outrider %s", f, c.Name, e.Name, c.Args[0])
					}
				}
				checked++
			}
		}
	}
	if checked < 3 {
		t.Errorf("checked %d outrider containers in the manifests, want at least 3", checked)
	}
}
