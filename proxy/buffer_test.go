package proxy

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "65536", want: 65536},
		{in: "64k", want: 64 << 10},
		{in: "16KiB", want: 16 << 10},
		{in: "10MB", want: 10 << 20},
		{in: "1g", want: 1 << 30},
		{in: "0", want: 0},
		{in: "1.5m", wantErr: true},
		{in: "-1k", wantErr: true},
		{in: "10t", wantErr: true},
		{in: "k", wantErr: true},
		{in: "99999999999g", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if tt.wantErr {
			if err == nil || !strings.Contains(err.Error(), tt.in) {
				t.Errorf("ParseSize(%q) = %d, %v; want an error naming it", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}
