package etcdclient

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		in        string
		endpoints []string
		prefix    string
		wantErr   string
	}{
		{in: "etcd://127.0.0.1:2379/outrider", endpoints: []string{"127.0.0.1:2379"}, prefix: "/outrider"},
		{in: "etcd://a:2379,b:2379/outrider/certs/", endpoints: []string{"a:2379", "b:2379"}, prefix: "/outrider/certs"},
		{in: "etcd://[::1]:2379/p//q", endpoints: []string{"[::1]:2379"}, prefix: "/p/q"},
		{in: "etcd://a:2379", wantErr: "prefix is required"},
		{in: "etcd://a:2379/", wantErr: "prefix is required"},
		{in: "etcd://a/p", wantErr: "want host:port"},
		{in: "etcd://a:2379,/p", wantErr: "want host:port"},
		{in: "etcd://u:pw@a:2379/p", wantErr: "user info"},
		{in: "http://a:2379/p", wantErr: "want etcd://"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseURL(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseURL(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseURL(%q): %v", tt.in, err)
			}
			if !slices.Equal(got.Endpoints, tt.endpoints) || got.Prefix != tt.prefix {
				t.Errorf("ParseURL(%q) = %v %q, want %v %q", tt.in, got.Endpoints, got.Prefix, tt.endpoints, tt.prefix)
			}
		})
	}
}

func TestOptionsConfig(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	target := Target{Endpoints: []string{"127.0.0.1:2379"}, Prefix: "/p"}
	cfg, err := Options{Username: "outrider", PasswordFile: pw}.Config(target)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Username != "outrider" || cfg.Password != "s3cret" || cfg.TLS != nil {
		t.Errorf("Config = user %q password %q TLS %v, want outrider, s3cret, no TLS", cfg.Username, cfg.Password, cfg.TLS)
	}
	for _, o := range []Options{
		{Username: "u"},
		{CertFile: "c"},
		{CAFile: filepath.Join(dir, "missing.pem")},
		{CAFile: pw}, // not PEM
	} {
		if _, err := o.Config(target); err == nil {
			t.Errorf("Options%+v.Config: no error", o)
		}
	}
}
