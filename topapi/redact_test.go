package topapi

import (
	"encoding/json"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the want fields of testdata/redact_cases.json from the current output")

// redactCase is one command-line shape of testdata/redact_cases.json: the
// table is shared with the /top handler test here and the end-to-end test
// in integration/, which runs every shape as a real process.
type redactCase struct {
	Name string   `json:"name"`
	Argv []string `json:"argv"`
	Want []string `json:"want"`
	// Secrets must appear nowhere in the redacted command line, nor in any
	// answer that shows it.
	Secrets []string `json:"secrets,omitempty"`
}

const redactCasesFile = "testdata/redact_cases.json"

func loadRedactCases(t *testing.T) []redactCase {
	t.Helper()
	b, err := os.ReadFile(redactCasesFile)
	if err != nil {
		t.Fatal(err)
	}
	var cases []redactCase
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	return cases
}

// Issue #16: redaction missed common shapes (mysql -pX, redis-cli -a X,
// --password -X, JSON and YAML in argv, user:X@host:, …).
func TestRedactShapes(t *testing.T) {
	cases := loadRedactCases(t)
	if len(cases) < 60 {
		t.Fatalf("%d shapes in %s, want at least 60", len(cases), redactCasesFile)
	}
	names := map[string]bool{}
	for i := range cases {
		c := &cases[i]
		t.Run(c.Name, func(t *testing.T) {
			if names[c.Name] {
				t.Fatalf("duplicate case name %q", c.Name)
			}
			names[c.Name] = true
			got := Redact(c.Argv)
			joined := strings.Join(got, " ")
			for _, s := range c.Secrets {
				if s != "" && strings.Contains(joined, s) {
					t.Errorf("Redact(%q) = %q, still shows %q", c.Argv, got, s)
				}
			}
			if *update {
				c.Want = got
				return
			}
			if diff := cmp.Diff(c.Want, got); diff != "" {
				t.Errorf("Redact(%q) (-want +got):\n%s", c.Argv, diff)
			}
		})
	}
	if *update {
		// One case a line, so that a diff shows which shape changed.
		var b strings.Builder
		b.WriteString("[\n")
		for i, c := range cases {
			line, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			b.Write(line)
			if i < len(cases)-1 {
				b.WriteString(",")
			}
			b.WriteString("\n")
		}
		b.WriteString("]\n")
		if err := os.WriteFile(redactCasesFile, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRedactDoesNotModifyInput(t *testing.T) {
	in := []string{"app", "--password=x", "sh -c 'mysql -px'"}
	Redact(in)
	if in[1] != "--password=x" || in[2] != "sh -c 'mysql -px'" {
		t.Errorf("Redact modified its input: %q", in)
	}
}

func TestRedactIsIdempotent(t *testing.T) {
	for _, c := range loadRedactCases(t) {
		once := Redact(c.Argv)
		if twice := Redact(once); !cmp.Equal(once, twice) {
			t.Errorf("%s: Redact(Redact(x)) = %q, Redact(x) = %q", c.Name, twice, once)
		}
	}
}

// Issue #16: a hostile process could stall the sampler with a command line
// made to be slow to redact (key-like words without a secret made the pair
// scan quadratic: a minute for 100 KB). Now the scan is linear and bounded.
func TestRedactHostileCommandLineIsFast(t *testing.T) {
	t.Parallel()
	for _, unit := range []string{"x:y ", "a:b@c ", "a=b ", "'", "--p x ", `"k": 1, `, "password: "} {
		arg := strings.Repeat(unit, MaxRedactBytes/len(unit)-1)
		for _, args := range [][]string{{"sh", "-c", arg}, {"app", arg, arg, arg}} {
			start := time.Now()
			got := Redact(args)
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Redact of %d bytes of %q took %v", len(arg), unit, d)
			}
			if len(got) != len(args) {
				t.Errorf("Redact returned %d arguments for %d", len(got), len(args))
			}
		}
	}
	if got := Redact([]string{"app", strings.Repeat("a", MaxRedactBytes), "--password=x"}); got[1] != Redacted || got[2] != Redacted {
		t.Errorf("arguments past MaxRedactBytes = %q, want %s", got[1:], Redacted)
	}
}
