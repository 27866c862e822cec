package configsync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// waitHealthy polls HealthURL until it answers 2xx twice in a row (so a
// reload still in flight is not mistaken for success) or HealthTimeout ends.
func (s *Syncer) waitHealthy(ctx context.Context) error {
	if s.cfg.HealthURL == "" {
		return nil
	}
	start := time.Now()
	hctx, cancel := context.WithTimeout(ctx, s.cfg.HealthTimeout)
	defer cancel()
	var last error
	ok := 0
	for {
		err := s.checkHealth(hctx)
		if err == nil {
			if ok++; ok >= 2 {
				s.m.stage("health", start, nil)
				return nil
			}
		} else {
			ok, last = 0, err
		}
		if !sleep(hctx, 200*time.Millisecond) {
			if last == nil {
				last = errors.New("no second 2xx answer")
			}
			err := fmt.Errorf("%w: %s: %v (waited %v)", ErrUnhealthy, s.cfg.HealthURL, last, s.cfg.HealthTimeout)
			s.m.stage("health", start, err)
			return err
		}
	}
}

func (s *Syncer) checkHealth(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, s.cfg.HealthURL, nil)
	if err != nil {
		return err
	}
	resp, err := s.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}
