package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCgroupMemoryLimit(t *testing.T) {
	write := func(t *testing.T, path, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		files  map[string]string
		want   int64
		wantOK bool
	}{
		{"v2 limit", map[string]string{"self": "0::/pod/app\n", "root/pod/app/memory.max": "134217728\n"}, 134217728, true},
		{"v2 max", map[string]string{"self": "0::/pod/app\n", "root/pod/app/memory.max": "max\n"}, 0, false},
		{"v2 namespaced root", map[string]string{"self": "0::/\n", "root/memory.max": "67108864\n"}, 67108864, true},
		{"v1 limit", map[string]string{"self": "4:memory:/docker/x\n", "root/memory/docker/x/memory.limit_in_bytes": "268435456\n"}, 268435456, true},
		{"v1 unlimited", map[string]string{"self": "4:memory:/\n", "root/memory/memory.limit_in_bytes": "9223372036854771712\n"}, 0, false},
		{"nothing", map[string]string{"self": "0::/\n"}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for p, c := range tt.files {
				write(t, filepath.Join(dir, p), c)
			}
			got, ok := cgroupMemoryLimit(filepath.Join(dir, "root"), filepath.Join(dir, "self"))
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("cgroupMemoryLimit = %d, %v; want %d, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
