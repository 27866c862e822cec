package topapi

import (
	"errors"
	"testing"
)

func TestParseScope(t *testing.T) {
	tests := []struct {
		in      string
		want    Scope
		wantErr error
	}{
		{"", Scope{}, nil},
		{"host", Scope{}, nil},
		{"cgroup", Scope{Kind: ScopeCgroup}, nil},
		{"tree=42", Scope{Kind: ScopeTree, PID: 42}, nil},
		{"tree=pidfile=/run/app.pid", Scope{Kind: ScopeTree, PIDFile: "/run/app.pid"}, nil},
		{"pidfile=/run/app.pid", Scope{Kind: ScopeTree, PIDFile: "/run/app.pid"}, nil},
		{"tree=0", Scope{}, ErrBadScope},
		{"tree=abc", Scope{}, ErrBadScope},
		{"pidfile=", Scope{}, ErrBadScope},
		{"container", Scope{}, ErrBadScope},
	}
	for _, tt := range tests {
		got, err := ParseScope(tt.in)
		if !errors.Is(err, tt.wantErr) || got != tt.want {
			t.Errorf("ParseScope(%q) = %+v, %v; want %+v, %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err == nil && tt.in != "" && tt.in != "pidfile=/run/app.pid" {
			if s := got.String(); s != tt.in {
				t.Errorf("ParseScope(%q).String() = %q", tt.in, s)
			}
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{Interval: -1},
		{Interval: 10},
		{Scope: Scope{Kind: ScopeTree}},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("Config%+v.Validate() = nil, want an error", c)
		}
	}
}
