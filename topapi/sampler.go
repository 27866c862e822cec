package topapi

import (
	"context"
	"sync/atomic"
	"time"
)

// firstGap is the wait between the first two samples: long enough for CPU
// figures that mean something (USER_HZ is 100, so 50 ticks per core), short
// enough that /top has real figures half a second after start.
const firstGap = 500 * time.Millisecond

// Sampler scans processes and host figures on a fixed interval and keeps the
// latest [Snapshot]. Its methods are safe for concurrent use; only Run
// samples.
type Sampler struct {
	cfg     Config
	scan    *scanner
	latest  atomic.Pointer[Snapshot]
	first   chan struct{} // closed when the first snapshot is published
	metrics *metrics
}

// New returns a Sampler; call Run to start sampling.
func New(cfg Config) (*Sampler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	sc, err := newScanner(cfg)
	if err != nil {
		return nil, err
	}
	s := &Sampler{cfg: cfg, scan: sc, first: make(chan struct{})}
	s.metrics = newMetrics(s, cfg.TopN)
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(s.metrics); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Run samples until ctx is done, then returns nil. It takes two samples
// half a second apart before publishing the first snapshot, then one every
// Interval.
func (s *Sampler) Run(ctx context.Context) error {
	s.sampleAndLog()
	gap := min(firstGap, s.cfg.Interval)
	t := time.NewTimer(gap)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		s.sampleAndLog()
		t.Reset(s.cfg.Interval)
	}
}

func (s *Sampler) sampleAndLog() {
	if err := s.Sample(); err != nil {
		s.cfg.Logger.Warn("sample failed", "err", err)
	}
}

// Sample takes one sample now and, from the second sample on, publishes a
// snapshot. Run calls it; it is exported for benchmarks and tools that drive
// their own schedule. It must not be called concurrently with itself or Run.
func (s *Sampler) Sample() error {
	start := time.Now()
	snap, err := s.scan.sample()
	took := time.Since(start)
	s.metrics.observe(took, err)
	if err != nil {
		return err
	}
	if snap == nil { // the baseline sample
		return nil
	}
	snap.SampleDurationSeconds = took.Seconds()
	if s.latest.Swap(snap) == nil {
		close(s.first)
	}
	return nil
}

// Snapshot returns the latest published snapshot, or nil before the first.
// The result must not be modified.
func (s *Sampler) Snapshot() *Snapshot { return s.latest.Load() }

// Wait returns the latest snapshot, waiting for the first one until ctx is
// done; then it returns ErrNoSample.
func (s *Sampler) Wait(ctx context.Context) (*Snapshot, error) {
	select {
	case <-s.first:
		return s.latest.Load(), nil
	case <-ctx.Done():
		return nil, ErrNoSample
	}
}

// Ready returns nil once a snapshot has been published: a readiness check
// for admin /readyz.
func (s *Sampler) Ready(context.Context) error {
	if s.latest.Load() == nil {
		return ErrNoSample
	}
	return nil
}

// Interval returns the sampling period in use.
func (s *Sampler) Interval() time.Duration { return s.cfg.Interval }
