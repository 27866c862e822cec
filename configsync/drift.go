package configsync

import "context"

// checkDrift re-hashes Dir and, when it no longer matches the applied
// version, reports it and, with DriftRestore, puts the version back.
func (s *Syncer) checkDrift(ctx context.Context) {
	if s.applied == nil {
		return
	}
	live, linksOK, err := s.lay.read()
	if err == nil && live != nil && linksOK && live.Hash() == s.applied.Hash() {
		return
	}
	changed := driftedNames(live, s.applied)
	s.mu.Lock()
	s.st.DriftDetected++
	s.mu.Unlock()
	if s.cfg.OnDrift == DriftReport {
		s.m.drift.WithLabelValues("reported").Inc()
		s.log.Warn("drift: files in dir differ from the applied version", "files", changed, "version", s.applied.DisplayVersion())
		return
	}
	s.m.drift.WithLabelValues("restored").Inc()
	s.log.Warn("drift: restoring the applied version", "files", changed, "version", s.applied.DisplayVersion())
	if _, err := s.apply(ctx, s.applied, false); err != nil {
		s.log.Error("drift: restoring failed", "err", err)
		return
	}
	if err := s.notifyAll(ctx); err != nil {
		s.log.Warn("drift: notifying the app", "err", err)
	}
}

// driftedNames lists the names (never contents) that differ.
func driftedNames(live, want *Snapshot) []string {
	var out []string
	for _, n := range want.names() {
		var lf File
		ok := false
		if live != nil {
			lf, ok = live.Files[n]
		}
		wf := want.Files[n]
		if !ok || lf.Mode != wf.Mode || string(lf.Data) != string(wf.Data) {
			out = append(out, n)
		}
	}
	if live != nil {
		for _, n := range live.names() {
			if _, ok := want.Files[n]; !ok {
				out = append(out, n)
			}
		}
	}
	if len(out) == 0 {
		out = append(out, "(symlinks)")
	}
	return out
}
