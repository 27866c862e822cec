package configsync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Syncer keeps Config.Dir in sync with Config.Source. Run owns all changes
// to the directory; Status, Ready and Reload are safe to call from any
// goroutine.
type Syncer struct {
	cfg       Config
	log       *slog.Logger
	src       Source
	lay       *layout
	state     stateStore
	notifiers []*Notifier
	validate  []string
	m         *metrics
	reloadCh  chan struct{}
	running   atomic.Bool

	// Owned by the goroutine running Run, RunOnce or DryRun.
	applied  *Snapshot // the version live in Dir, as far as we know
	rejected string    // hash of the last version refused (validate, health)
	desired  *Snapshot // the latest snapshot from the source
	retry    *backoff  // for versions whose notify failed
	// unconfirmed: the applied version is live but the app has not yet
	// been told about it and found healthy (at pod start the app is usually
	// not up when the first version lands). Run retries the notify.
	unconfirmed bool

	mu sync.Mutex
	st Status
}

// States of a Syncer, the values of Status.State.
const (
	// StateWaiting: no version is live in Dir yet.
	StateWaiting = "waiting"
	// StateVerifying: a version was just made live; the app is being
	// notified and its health checked. AppliedVersion is that version.
	StateVerifying = "verifying"
	// StateNotifyPending: a version is live but the app could not be told
	// (usually: not up yet) and there is no earlier version to go back to;
	// the notify is retried with back-off, then health is checked.
	StateNotifyPending = "notify_pending"
	// StateUnhealthy: the live version failed its health check and there
	// was no earlier version to roll back to.
	StateUnhealthy = "unhealthy"
	// StateInSync: the live version passed notify and health (or was
	// restored or adopted at start).
	StateInSync = "in_sync"
)

// Status is the /status view of a Syncer.
type Status struct {
	Source string `json:"source"`
	Dir    string `json:"dir"`
	// State is one of the State* constants.
	State           string     `json:"state"`
	DesiredVersion  string     `json:"desired_version,omitempty"`
	AppliedVersion  string     `json:"applied_version,omitempty"`
	AppliedHash     string     `json:"applied_hash,omitempty"`
	AppliedAt       *time.Time `json:"applied_at,omitempty"`
	Files           int        `json:"files"`
	LastSync        *time.Time `json:"last_sync,omitempty"`
	LastSuccess     *time.Time `json:"last_success,omitempty"`
	LastResult      string     `json:"last_result,omitempty"`
	LastError       string     `json:"last_error,omitempty"`
	RejectedVersion string     `json:"rejected_version,omitempty"`
	Rollbacks       int        `json:"rollbacks"`
	DriftDetected   int        `json:"drift_detected"`
}

// New checks cfg and returns a Syncer reading cfg.Source. It touches no
// files and contacts no source; Run, RunOnce and DryRun do.
func New(cfg Config) (*Syncer, error) { return NewWithSource(cfg, nil) }

// NewWithSource is New with a Source made by the caller (tests, or a
// source this package does not build in). If src is nil, it is opened from
// cfg.Source.
func NewWithSource(cfg Config, src Source) (*Syncer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if src == nil {
		var err error
		src, err = OpenSource(cfg.Source, SourceOptions{
			File: cfg.File, TokenFile: cfg.TokenFile, Interval: cfg.Interval,
			HTTPClient: cfg.HTTPClient, Logger: cfg.Logger, Etcd: cfg.Etcd,
		})
		if err != nil {
			return nil, err
		}
	}
	s := &Syncer{
		cfg:      cfg,
		log:      cfg.Logger,
		src:      src,
		lay:      &layout{dir: filepath.Clean(cfg.Dir), now: cfg.Now},
		state:    stateStore{dir: cfg.StateDir, keep: cfg.KeepVersions},
		reloadCh: make(chan struct{}, 1),
		retry:    newBackoff(cfg.Interval),
	}
	for _, spec := range cfg.Notify {
		n, err := ParseNotifier(spec)
		if err != nil {
			return nil, err
		}
		s.notifiers = append(s.notifiers, n)
	}
	if cfg.ValidateCommand != "" {
		s.validate, _ = splitCommand(cfg.ValidateCommand) // checked by Validate
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("configsync: registering metrics: %w", err)
	}
	s.m = m
	s.st = Status{Source: src.String(), Dir: s.lay.dir, State: StateWaiting}
	return s, nil
}

// Status returns a copy of the current status.
func (s *Syncer) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// Ready returns nil once a version is live in Dir (restored, adopted or
// applied), else why not.
func (s *Syncer) Ready(context.Context) error {
	st := s.Status()
	if st.AppliedHash != "" {
		return nil
	}
	if st.LastError != "" {
		return fmt.Errorf("no config version applied yet; last error: %s", st.LastError)
	}
	return errors.New("no config version applied yet")
}

// Reload asks the running loop to fetch from the source now, and to give a
// version refused earlier another chance. It returns at once; the result
// shows in Status and the logs. Without Run it returns ErrNotRunning.
func (s *Syncer) Reload(context.Context) error {
	if !s.running.Load() {
		return ErrNotRunning
	}
	select {
	case s.reloadCh <- struct{}{}:
	default: // one is already queued
	}
	return nil
}

// Run restores the last good version, then follows the source until ctx is
// done, applying each new version, and checks Dir for drift. It returns nil
// when ctx is done, or an error when Dir cannot be used at all.
func (s *Syncer) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("configsync: Run called twice")
	}
	defer s.running.Store(false)
	defer s.lay.close()
	if err := s.restore(ctx); err != nil {
		return err
	}
	wctx, stopWatch := context.WithCancel(ctx)
	updates := make(chan Update)
	watchErr := make(chan error, 1)
	go func() { watchErr <- s.src.Watch(wctx, updates) }()
	defer func() {
		stopWatch()
		<-watchErr
	}()

	var drift <-chan time.Time
	if s.cfg.OnDrift != DriftOff {
		t := time.NewTicker(s.cfg.DriftInterval)
		defer t.Stop()
		drift = t.C
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var pending *Snapshot
	var firstPending time.Time
	schedule := func(snap *Snapshot, delay time.Duration) {
		if pending == nil {
			firstPending = time.Now()
		}
		pending = snap
		// Trailing debounce, but never later than 10×Debounce after the
		// first change of a burst.
		delay = min(delay, time.Until(firstPending.Add(10*s.cfg.Debounce)))
		timer.Reset(max(delay, 0))
	}
	// retryLater tries snap again after the back-off delay, which the
	// debounce cap must not shorten; a new version arriving meanwhile is
	// still applied after the ordinary debounce.
	retryLater := func(snap *Snapshot) {
		delay := s.retry.failure()
		s.log.Info("the app could not be told; retrying", "version", snap.DisplayVersion(), "retry_in_seconds", delay.Seconds())
		pending, firstPending = snap, time.Now().Add(delay)
		timer.Reset(delay)
	}
	if s.unconfirmed && s.applied != nil {
		retryLater(s.applied) // restored at start, but the app did not answer
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-watchErr:
			watchErr <- nil // for the deferred receive
			if err != nil {
				return fmt.Errorf("configsync: source %s: %w", s.src, err)
			}
			return nil
		case u := <-updates:
			s.m.stageDuration.WithLabelValues("fetch").Observe(u.Duration.Seconds())
			if snap := s.handleFetch(u.Snapshot, u.Err); snap != nil {
				schedule(snap, s.cfg.Debounce)
			}
		case <-s.reloadCh:
			s.log.Info("reload: fetching now", "source", s.src.String())
			s.rejected = ""
			start := time.Now()
			snap, err := s.src.Fetch(ctx)
			s.m.stageDuration.WithLabelValues("fetch").Observe(time.Since(start).Seconds())
			if errors.Is(err, ErrNotModified) && s.desired != nil && s.applied != nil && s.desired.Hash() != s.applied.Hash() {
				snap, err = s.desired, nil // retry the version refused earlier
			}
			if snap = s.handleFetch(snap, err); snap != nil {
				schedule(snap, 0)
			} else if s.unconfirmed && s.applied != nil {
				schedule(s.applied, 0) // and tell the app now, not after the back-off
			}
		case <-timer.C:
			snap := pending
			pending = nil
			if snap == nil {
				continue
			}
			if res, _ := s.sync(ctx, snap); res == ResultNotifyFailed && ctx.Err() == nil {
				retryLater(snap)
			}
		case <-drift:
			s.checkDrift(ctx)
		}
	}
}

// RunOnce restores the last good version, fetches once and applies the
// result, for init containers. It fails when the source cannot be reached or
// the version is not live at the end.
func (s *Syncer) RunOnce(ctx context.Context) error {
	defer s.lay.close()
	if err := s.restore(ctx); err != nil {
		return err
	}
	start := time.Now()
	snap, err := s.src.Fetch(ctx)
	s.m.stageDuration.WithLabelValues("fetch").Observe(time.Since(start).Seconds())
	if snap = s.handleFetch(snap, err); snap == nil {
		if err != nil && !errors.Is(err, ErrNotModified) {
			return err
		}
		return nil
	}
	if _, err = s.sync(ctx, snap); err != nil && s.Status().State == StateNotifyPending {
		// An init container runs before the app: the files are live and
		// the app reads them when it starts.
		s.log.Warn("the app could not be told; it reads the files when it starts", "err", err)
		return nil
	}
	return err
}

// DryRun fetches once and writes to w a unified diff from the live files to
// the fetched version (secret-looking values redacted). It changes nothing:
// no files, no state, no notifications.
func (s *Syncer) DryRun(ctx context.Context, w io.Writer) error {
	defer s.lay.close()
	snap, err := s.src.Fetch(ctx)
	if err != nil {
		return err
	}
	if err := s.lay.check(snap); err != nil {
		return err
	}
	live, _, err := s.lay.read()
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, Diff(live, snap))
	return err
}

// handleFetch records a fetch result and returns the snapshot to apply, or
// nil when there is nothing to do.
func (s *Syncer) handleFetch(snap *Snapshot, err error) *Snapshot {
	s.m.stageResults.WithLabelValues("fetch", stageResult(err)).Inc()
	switch {
	case errors.Is(err, ErrNotModified):
		s.record(ResultNotModified, nil)
		return nil
	case errors.Is(err, ErrEmpty), errors.Is(err, ErrInvalidBundle), errors.Is(err, ErrUnsafePath):
		s.log.Warn("source answer rejected; keeping the current files", "source", s.src.String(), "err", err)
		s.record(ResultInvalid, err)
		return nil
	case err != nil:
		s.log.Warn("fetch failed; keeping the current files", "source", s.src.String(), "err", err)
		s.record(ResultFetchFailed, err)
		return nil
	}
	s.desired = snap
	s.mu.Lock()
	s.st.DesiredVersion = snap.DisplayVersion()
	s.mu.Unlock()
	h := snap.Hash()
	switch {
	case s.applied != nil && h == s.applied.Hash() && s.unconfirmed:
		return nil // live; the notify retry under way will confirm it
	case s.applied != nil && h == s.applied.Hash():
		s.record(ResultUnchanged, nil)
		return nil
	case h == s.rejected:
		s.log.Debug("version refused earlier; waiting for a new one or SIGHUP", "version", snap.DisplayVersion())
		return nil
	}
	return snap
}

// sync runs the transaction for one version: check, stage, validate, swap,
// notify, verify health, and roll back on failure. It returns the result
// label and the error, if any, already logged.
func (s *Syncer) sync(ctx context.Context, snap *Snapshot) (string, error) {
	res, err := s.transact(ctx, snap)
	if ctx.Err() != nil && err != nil {
		return res, err // shutting down: not the version's fault
	}
	s.record(res, err)
	if err != nil {
		s.log.Warn("sync failed", "result", res, "version", snap.DisplayVersion(), "err", err)
	}
	return res, err
}

func (s *Syncer) transact(ctx context.Context, snap *Snapshot) (string, error) {
	version, hash := snap.DisplayVersion(), snap.Hash()
	if s.applied != nil && hash == s.applied.Hash() {
		if !s.unconfirmed {
			return ResultUnchanged, nil
		}
		// Live, but the app was never told: tell it now (Issue #12).
		return s.confirm(ctx, snap, nil)
	}
	prev := s.applied
	if res, err := s.apply(ctx, snap, true); err != nil {
		switch res {
		case ResultInvalid:
			s.rejected = hash
		case ResultValidateFailed:
			s.rejected = hash
			s.markRejected(version)
		}
		return res, err
	}

	if s.unconfirmed {
		prev = nil // never confirmed by the app: nothing to roll back to
	}
	return s.confirm(ctx, snap, prev)
}

// confirm tells the app about the live version snap, waits for it to be
// healthy and then records snap as the last good version. On failure it
// rolls back to prev; with no prev (the first version after start) a
// failed notify leaves snap live and unconfirmed, for Run to retry.
func (s *Syncer) confirm(ctx context.Context, snap, prev *Snapshot) (string, error) {
	version, hash := snap.DisplayVersion(), snap.Hash()
	s.unconfirmed = true
	s.setState(StateVerifying)
	if err := s.notifyAll(ctx); err != nil {
		if ctx.Err() != nil {
			return ResultNotifyFailed, err
		}
		if prev != nil {
			s.rollback(ctx, prev, snap, "notify failed")
			return ResultNotifyFailed, err
		}
		s.setState(StateNotifyPending)
		return ResultNotifyFailed, err
	}
	if err := s.waitHealthy(ctx); err != nil {
		if ctx.Err() != nil {
			return ResultNotifyFailed, err
		}
		s.rejected = hash
		s.markRejected(version)
		if prev == nil {
			s.unconfirmed = false // told, and found unhealthy: retrying would not help
			s.setState(StateUnhealthy)
			s.log.Error("app unhealthy after reload and no previous version to roll back to; keeping this one", "version", version, "err", err)
			return ResultUnhealthy, err
		}
		s.rollback(ctx, prev, snap, "unhealthy")
		return ResultRolledBack, err
	}
	if err := s.state.save(snap, s.cfg.Now()); err != nil {
		s.log.Error("saving last good version", "err", err)
	}
	s.unconfirmed = false
	s.setState(StateInSync)
	s.retry.success()
	s.log.Info("applied", "version", version, "files", len(snap.Files))
	return ResultApplied, nil
}

func errIf(cond bool, err error) error {
	if cond {
		if err == nil {
			return errors.New("failed")
		}
		return err
	}
	return nil
}

// apply makes snap live through the layout's one apply path (check, stage,
// validate, swap, clean up) and records it: sync, restore, drift repair and
// rollback all come through here. With validate, the --validate command runs
// on the staged copy first; versions that passed before skip it. On failure
// it returns the result label and the error, and Dir is as it was.
func (s *Syncer) apply(ctx context.Context, snap *Snapshot, validate bool) (string, error) {
	start := time.Now()
	var validating time.Duration
	var check func(staged string) error
	if validate && len(s.validate) > 0 {
		check = func(staged string) error {
			vstart := time.Now()
			argv := make([]string, len(s.validate))
			for i, a := range s.validate {
				argv[i] = strings.ReplaceAll(a, "{dir}", staged)
			}
			err := runCommand(ctx, argv, s.cfg.CommandTimeout)
			validating = time.Since(vstart)
			s.m.stage("validate", vstart, err)
			switch {
			case err == nil:
				return nil
			case ctx.Err() != nil:
				return ctx.Err() // shutting down: not the version's fault
			}
			return fmt.Errorf("%w: %v", ErrValidateFailed, err)
		}
	}
	live, err := s.lay.apply(snap, check)
	var refused *refusedError
	switch {
	case !live && errors.As(err, &refused):
		return ResultInvalid, err
	case !live && errors.Is(err, ErrValidateFailed):
		return ResultValidateFailed, err
	}
	took := time.Since(start) - validating
	s.m.stageDuration.WithLabelValues("apply").Observe(took.Seconds())
	s.m.stageResults.WithLabelValues("apply", stageResult(errIf(!live, err))).Inc()
	if !live {
		return ResultApplyFailed, err
	}
	if err != nil {
		s.log.Warn("tidying up after the swap", "err", err)
	}
	s.setApplied(snap)
	s.log.Info("version live", "version", snap.DisplayVersion(), "files", len(snap.Files), "duration_seconds", took.Seconds())
	return "", nil
}

// rollback puts back, in place of bad, the newest earlier version the app
// is healthy with: prev first, then the versions kept in StateDir, newest
// first. Each is applied, announced and verified in turn; when none is
// healthy, prev is left live.
func (s *Syncer) rollback(ctx context.Context, prev, bad *Snapshot, why string) {
	start := time.Now()
	s.m.rollbacks.Inc()
	s.mu.Lock()
	s.st.Rollbacks++
	s.mu.Unlock()
	candidates := []*Snapshot{prev}
	history, err := s.state.history()
	if err != nil {
		s.log.Warn("reading saved versions for rollback", "err", err)
	}
	for _, v := range history {
		candidates = append(candidates, v.Snap)
	}
	tried := map[string]bool{bad.Hash(): true}
	var last error
	for _, c := range candidates {
		if tried[c.Hash()] {
			continue
		}
		tried[c.Hash()] = true
		if _, err := s.apply(ctx, c, false); err != nil {
			last = err
			s.log.Error("rollback: putting a version back failed", "version", c.DisplayVersion(), "err", err)
			continue
		}
		s.log.Warn("rolled back", "reason", why, "from_version", bad.DisplayVersion(), "to_version", c.DisplayVersion())
		s.unconfirmed = false // it passed before
		s.setState(StateInSync)
		if err := s.notifyAll(ctx); err != nil {
			s.m.stage("rollback", start, err)
			s.log.Error("notifying the app after rollback", "err", err)
			return
		}
		last = s.waitHealthy(ctx)
		if last == nil {
			s.m.stage("rollback", start, nil)
			if c != prev {
				if err := s.state.save(c, s.cfg.Now()); err != nil {
					s.log.Error("saving last good version", "err", err)
				}
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Error("app still unhealthy after rollback", "version", c.DisplayVersion(), "err", last)
	}
	s.m.stage("rollback", start, errIf(true, last))
	if s.applied != nil && s.applied.Hash() != prev.Hash() {
		if _, err := s.apply(ctx, prev, false); err == nil {
			s.log.Error("no earlier version made the app healthy; the previous one is live again", "version", prev.DisplayVersion())
			if err := s.notifyAll(ctx); err != nil {
				s.log.Error("notifying the app after rollback", "err", err)
			}
		}
	}
}

// notifyAll runs every notifier in order and returns the first error.
func (s *Syncer) notifyAll(ctx context.Context) error {
	if len(s.notifiers) == 0 {
		return nil
	}
	start := time.Now()
	var first error
	for _, n := range s.notifiers {
		err := n.notify(ctx, s.cfg.HTTPClient, s.cfg.CommandTimeout)
		s.m.notifications.WithLabelValues(n.Kind, stageResult(err)).Inc()
		if err != nil && first == nil {
			first = err
		}
	}
	s.m.stage("notify", start, first)
	return first
}

// restore runs first: it removes what an interrupted run left, then makes
// the last good version from StateDir live if Dir does not already hold it.
// Without saved state, a version already live in Dir is adopted.
func (s *Syncer) restore(ctx context.Context) error {
	if err := s.lay.init(); err != nil {
		return err
	}
	good, at, err := s.state.load()
	if err != nil {
		s.log.Warn("ignoring saved state", "err", err)
	}
	live, linksOK, err := s.lay.read()
	if err != nil {
		s.log.Warn("reading the live version", "err", err)
		live = nil
	}
	switch {
	case good != nil && live != nil && live.Hash() == good.Hash() && linksOK:
		s.setApplied(good)
		s.setAppliedAt(at)
		s.setState(StateInSync)
		s.log.Info("last good version is live", "version", good.DisplayVersion())
	case good != nil:
		if _, err := s.apply(ctx, good, false); err != nil {
			return fmt.Errorf("configsync: restoring last good version: %w", err)
		}
		s.log.Info("restored last good version", "version", good.DisplayVersion())
		if err := s.notifyAll(ctx); err != nil {
			// Usually the app is not up yet; Run retries with back-off.
			s.log.Warn("notifying the app after restore", "err", err)
			s.unconfirmed = true
			s.setState(StateNotifyPending)
		} else {
			s.setState(StateInSync)
		}
	case live != nil && len(live.Files) > 0:
		if !linksOK {
			if _, err := s.apply(ctx, live, false); err != nil {
				return fmt.Errorf("configsync: repairing links: %w", err)
			}
		}
		s.setApplied(live)
		s.setState(StateInSync)
		s.log.Info("adopted the version found in dir", "version", live.DisplayVersion())
	}
	return nil
}

func (s *Syncer) setApplied(snap *Snapshot) {
	s.applied = snap
	now := s.cfg.Now()
	s.m.setVersion(snap, now)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.AppliedVersion = snap.DisplayVersion()
	s.st.AppliedHash = snap.Hash()
	s.st.AppliedAt = &now
	s.st.Files = len(snap.Files)
}

func (s *Syncer) setAppliedAt(at time.Time) {
	if at.IsZero() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.AppliedAt = &at
}

func (s *Syncer) setState(state string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.State = state
}

func (s *Syncer) markRejected(version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.RejectedVersion = version
}

// record updates status and metrics after a sync attempt.
func (s *Syncer) record(result string, err error) {
	now := s.cfg.Now()
	s.m.syncs.WithLabelValues(result).Inc()
	s.m.lastAttempt.Set(float64(now.UnixNano()) / 1e9)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.LastSync = &now
	switch s.st.LastResult {
	case ResultValidateFailed, ResultApplyFailed, ResultNotifyFailed, ResultRolledBack, ResultUnhealthy:
		if result == ResultNotModified {
			// An unchanged source is no news: keep showing why the desired
			// version is not live.
			return
		}
	}
	s.st.LastResult = result
	if err != nil {
		s.st.LastError = err.Error()
		return
	}
	s.st.LastError = ""
	s.st.LastSuccess = &now
	s.m.lastSuccess.Set(float64(now.UnixNano()) / 1e9)
}
