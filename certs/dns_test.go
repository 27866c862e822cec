package certs

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libdns/libdns"
)

const testSecret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I="

func TestParseTSIGKey(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    tsigKey
		wantErr string
	}{
		{"tsig-keygen", "key \"ddns-key.example\" {\n\talgorithm hmac-sha256;\n\tsecret \"" + testSecret + "\";\n};\n",
			tsigKey{"ddns-key.example", "hmac-sha256", testSecret}, ""},
		{"comments, unquoted name, trailing dots", "# made by hand\n// more\n/* and\nmore */ key acme. { algorithm HMAC-SHA512.; secret \"" + testSecret + "\"; }",
			tsigKey{"acme", "hmac-sha512", testSecret}, ""},
		{"md5 long name", `key k { algorithm hmac-md5; secret "` + testSecret + `"; };`,
			tsigKey{"k", "hmac-md5.sig-alg.reg.int", testSecret}, ""},
		{"empty", "", tsigKey{}, "not a BIND key file"},
		{"knot yaml", "key:\n  - id: k\n    algorithm: hmac-sha256\n", tsigKey{}, "not a BIND key file"},
		{"no secret", `key k { algorithm hmac-sha256; };`, tsigKey{}, "no secret"},
		{"bad algorithm", `key k { algorithm hmac-sha3; secret "` + testSecret + `"; };`, tsigKey{}, `algorithm "hmac-sha3" not supported`},
		{"not base64", `key k { algorithm hmac-sha256; secret "%%%%TOPSECRET"; };`, tsigKey{}, "not base64"},
		{"two keys", `key a { algorithm hmac-sha256; secret "` + testSecret + `"; }; key b { };`, tsigKey{}, "exactly one key"},
		{"missing semicolon", `key k { algorithm hmac-sha256 secret "x"; };`, tsigKey{}, `want ";"`},
		{"unterminated", `key k { algorithm hmac-sha256; secret "abc`, tsigKey{}, "unterminated"},
		{"truncated", `key k { algorithm hmac-sha256;`, tsigKey{}, "end of file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseTSIGKey(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseTSIGKey() error = %v, want one containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "TOPSECRET") || strings.Contains(err.Error(), testSecret) {
					t.Errorf("error %q quotes the secret", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("parseTSIGKey() = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func FuzzParseTSIGKey(f *testing.F) {
	f.Add(`key "k" { algorithm hmac-sha256; secret "` + testSecret + `"; };`)
	f.Add("/* x */ key k { secret \"\"; } ; # y")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := parseTSIGKey(s)
		if err == nil && (k.name == "" || k.secret == "" || k.algorithm == "") {
			t.Fatalf("parseTSIGKey(%q) = %+v with no error, want every field", s, k)
		}
	})
}

func TestValidateDNS(t *testing.T) {
	acme := func(c Config) Config {
		c.Domains = append([]string{"a.example"}, c.Domains...)
		return c
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"rfc2136", acme(Config{DNSProvider: "rfc2136", DNSServer: "127.0.0.1:5353", DNSTSIGKeyFile: "k"}), ""},
		{"rfc2136 default port", acme(Config{DNSProvider: "rfc2136", DNSServer: "ns1.example", DNSTSIGKeyFile: "k"}), ""},
		{"rfc2136 without server", acme(Config{DNSProvider: "rfc2136", DNSTSIGKeyFile: "k"}), "needs --acme-dns-server"},
		{"rfc2136 without key", acme(Config{DNSProvider: "rfc2136", DNSServer: "ns1.example"}), "needs --acme-dns-tsig-key-file"},
		{"exec", acme(Config{DNSProvider: "exec:/usr/local/bin/dns-hook"}), ""},
		{"exec relative", acme(Config{DNSProvider: "exec:dns-hook"}), "absolute path"},
		{"unknown provider", acme(Config{DNSProvider: "route53"}), "unknown provider"},
		{"server without provider", acme(Config{DNSServer: "ns1.example"}), "need --acme-dns rfc2136"},
		{"resolvers without provider", acme(Config{DNSResolvers: []string{"127.0.0.1"}}), "needs --acme-dns"},
		{"bad resolver", acme(Config{DNSProvider: "exec:/x", DNSResolvers: []string{"a b:53"}}), "not HOST or HOST:PORT"},
		{"wildcard without dns", Config{Domains: []string{"*.a.example"}}, "only by DNS-01"},
		{"wildcard with dns", acme(Config{DNSProvider: "exec:/x", Domains: []string{"*.a.example"}}), ""},
		{"wildcard internal", Config{Internal: true, Domains: []string{"*.a.example"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestDNSServerAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1": "127.0.0.1:53", "127.0.0.1:5353": "127.0.0.1:5353",
		"::1": "[::1]:53", "[::1]": "[::1]:53", "[::1]:5353": "[::1]:5353", "ns.example": "ns.example:53",
	} {
		if got, err := dnsServerAddr(in); got != want || err != nil {
			t.Errorf("dnsServerAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestExecProvider(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	script := filepath.Join(dir, "hook")
	body := "#!/bin/sh\necho \"$@\" >> " + log + "\n[ \"$3\" = fail ] && { echo 'api said no'; exit 3; }\nexit 0\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	p := &execProvider{path: script, log: slog.New(slog.DiscardHandler)}
	ctx := context.Background()
	rec := []libdns.Record{libdns.RR{Type: "TXT", Name: "_acme-challenge", Data: "tok"}}
	if _, err := p.AppendRecords(ctx, "a.example.", rec); err != nil {
		t.Fatal(err)
	}
	if _, err := p.DeleteRecords(ctx, "a.example", rec); err != nil {
		t.Fatal(err)
	}
	_, err := p.AppendRecords(ctx, "a.example.", []libdns.Record{libdns.RR{Type: "TXT", Name: "x", Data: "fail"}})
	if err == nil || !strings.Contains(err.Error(), "api said no") || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("failing command: err = %v, want its exit status and first output line", err)
	}
	b, _ := os.ReadFile(log)
	want := "present _acme-challenge.a.example. tok\ncleanup _acme-challenge.a.example. tok\npresent x.a.example. fail\n"
	if string(b) != want {
		t.Errorf("calls:\n%s\nwant:\n%s", b, want)
	}
}
