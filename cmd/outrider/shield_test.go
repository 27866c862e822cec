package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// Issue #14: bad input to each shield flag is one line naming the value,
// and exit 2.
func TestShieldFlagErrors(t *testing.T) {
	up := []string{"proxy", "--upstream", "http://127.0.0.1:1"}
	tests := []struct {
		args    []string
		wantOut string
	}{
		{[]string{"--proxy-protocol-from", "10.0.0.0/33"}, `--proxy-protocol-from: invalid CIDR "10.0.0.0/33"`},
		{[]string{"--proxy-protocol-from", "lb.example"}, `invalid CIDR "lb.example"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			code := run(context.Background(), append(up, tt.args...), &out, &out)
			msg := strings.TrimSpace(out.String())
			if code != exitUsage || !strings.Contains(msg, tt.wantOut) || strings.Contains(msg, "\n") {
				t.Errorf("run(%q) = %d, output %q; want %d and one line containing %q", tt.args, code, msg, exitUsage, tt.wantOut)
			}
		})
	}
}
