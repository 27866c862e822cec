package topapi

import (
	"os"
	"testing"
	"time"
)

// BenchmarkSample2000 measures one steady-state sample of the real /proc
// with at least 2,000 processes: it starts 2,000 real `sleep 600` children
// (on top of whatever runs on the machine) and kills them afterwards.
// Static facts are cached after the first sample, as in production, so each
// iteration reads /proc/PID/stat for every process plus the host files.
//
//	go test -run '^$' -bench Sample2000 -benchtime 50x ./topapi
func BenchmarkSample2000(b *testing.B) {
	const n = 2000
	sleep := "/bin/sleep"
	if _, err := os.Stat(sleep); err != nil {
		b.Skip("no /bin/sleep")
	}
	procs := make([]*os.Process, 0, n)
	b.Cleanup(func() {
		for _, p := range procs {
			p.Kill()
			p.Wait()
		}
	})
	for range n {
		p, err := os.StartProcess(sleep, []string{"sleep", "600"}, &os.ProcAttr{})
		if err != nil {
			b.Fatalf("starting process %d of %d: %v", len(procs)+1, n, err)
		}
		procs = append(procs, p)
	}
	s, err := New(Config{Interval: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	for range 2 { // baseline, then a published snapshot with every static cached
		if err := s.Sample(); err != nil {
			b.Fatal(err)
		}
	}
	if got := s.Snapshot().Host.ProcessCount; got < n {
		b.Fatalf("sampled %d processes, want at least %d", got, n)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := s.Sample(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(s.Snapshot().Host.ProcessCount), "processes")
}
