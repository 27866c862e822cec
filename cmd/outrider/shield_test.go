package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outrider-dev/outrider/internal/testcert"
)

// Issue #14: bad input to each shield flag is one line naming the value,
// and exit 2.
func TestShieldFlagErrors(t *testing.T) {
	up := []string{"proxy", "--upstream", "http://127.0.0.1:1"}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, testcert.NewCA(t).CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args    []string
		wantOut string
	}{
		{[]string{"--proxy-protocol-from", "10.0.0.0/33"}, `--proxy-protocol-from: invalid CIDR "10.0.0.0/33"`},
		{[]string{"--proxy-protocol-from", "lb.example"}, `invalid CIDR "lb.example"`},
		{[]string{"--max-inflight", "-1"}, `invalid value "-1" for flag --max-inflight`},
		{[]string{"--max-inflight", "many"}, `invalid value "many" for flag --max-inflight: want a whole number`},
		{[]string{"--max-inflight", "4", "--queue-timeout", "0"}, `invalid value "0s" for flag --queue-timeout: must be positive`},
		{[]string{"--queue-timeout", "soon"}, `invalid value "soon" for flag --queue-timeout`},
		{[]string{"--queue-timeout", "5s"}, "--queue-timeout needs --max-inflight"},
		{[]string{"--rate-limit", "fast"}, `invalid rate "fast"`},
		{[]string{"--rate-limit", "10/h"}, `invalid rate "10/h"`},
		{[]string{"--rate-limit", "-5/s"}, `invalid rate "-5/s"`},
		{[]string{"--rate-limit", "0"}, `invalid rate "0"`},
		{[]string{"--rate-limit", "10/s", "--rate-burst", "-2"}, `invalid value "-2" for flag --rate-burst`},
		{[]string{"--rate-burst", "5"}, "--rate-burst needs --rate-limit"},
		{[]string{"--auth-url", "auth.example/check"}, `invalid --auth-url "auth.example/check": want http(s)://host[:port]/path`},
		{[]string{"--auth-url", "ftp://127.0.0.1/x"}, `invalid --auth-url "ftp://127.0.0.1/x"`},
		{[]string{"--auth-copy-headers", "X-User"}, "--auth-copy-headers needs --auth-url"},
		{[]string{"--auth-url", "http://127.0.0.1:1/", "--auth-copy-headers", "X User"}, `invalid --auth-copy-headers name "X User"`},
		{[]string{"--buffer-requests", "lots"}, `invalid value "lots" for flag --buffer-requests: want bytes, or a number with k, m or g`},
		{[]string{"--buffer-requests", "-1k"}, `invalid value "-1k" for flag --buffer-requests`},
		{[]string{"--buffer-requests", "10t"}, `invalid value "10t" for flag --buffer-requests`},
		{[]string{"--buffer-memory", "64k"}, "--buffer-memory needs --buffer-requests"},
		{[]string{"--compress", "br"}, `invalid --compress "br": brotli is not offered`},
		{[]string{"--compress", "gzip,lz4"}, `invalid --compress "lz4": want gzip, zstd or both`},
		{[]string{"--compress-secrets"}, "--compress-secrets needs --compress"},
		{[]string{"--client-ca", caFile, "--client-crl", "/nonexistent.crl"}, "reading --client-crl: open /nonexistent.crl"},
		{[]string{"--client-ca", caFile, "--client-crl", caFile}, "--client-crl " + caFile + ": no CRL in it"},
		{[]string{"--client-auth", "optional"}, "--client-auth needs --client-ca"},
		{[]string{"--allow-client", "cn=alice"}, "--allow-client needs --client-ca"},
		{[]string{"--client-crl", "/x.crl"}, "--client-crl needs --client-ca"},
		{[]string{"--client-ca", "/nonexistent/ca.pem"}, "reading --client-ca: open /nonexistent/ca.pem"},
		{[]string{"--client-ca", "shield_test.go"}, "--client-ca shield_test.go: no PEM certificate in it"},
		{[]string{"--client-ca", "shield_test.go", "--client-auth", "maybe"}, `invalid --client-auth "maybe": want require or optional`},
		{[]string{"--client-ca", "shield_test.go", "--allow-client", "name=alice"}, `invalid --allow-client "name=alice"`},
		{[]string{"--client-ca", "shield_test.go", "--allow-client", "uri=/relative*"}, `invalid --allow-client "uri=/relative*": the uri must be absolute`},
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
