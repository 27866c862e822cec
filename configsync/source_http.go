package configsync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// httpSource polls a URL with If-None-Match and compares content hashes,
// since servers do not always honour ETags.
type httpSource struct {
	url       string
	display   string
	file      string
	tokenFile string
	interval  time.Duration
	client    *http.Client
	log       *slog.Logger

	mu       sync.Mutex
	etag     string
	lastHash string
}

func newHTTPSource(u *url.URL, opts SourceOptions) *httpSource {
	d := *u
	d.User = nil
	if d.RawQuery != "" {
		d.RawQuery = "…" // query strings carry tokens too often to log
	}
	d.Fragment = ""
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	return &httpSource{
		url: u.String(), display: d.String(), file: opts.File, tokenFile: opts.TokenFile,
		interval: opts.Interval, client: client, log: opts.Logger,
	}
}

func (s *httpSource) String() string { return s.display }

func (s *httpSource) Fetch(ctx context.Context) (*Snapshot, error) {
	s.mu.Lock()
	etag, lastHash := s.etag, s.lastHash
	s.mu.Unlock()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, fmt.Errorf("configsync: source %s: %w", s.display, err)
	}
	if etag != "" && lastHash != "" {
		req.Header.Set("If-None-Match", etag)
	}
	if s.file == "" {
		req.Header.Set("Accept", "application/json")
	}
	if s.tokenFile != "" {
		tok, err := os.ReadFile(s.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("configsync: reading token file: %w", err)
		}
		t := strings.TrimSpace(string(tok))
		if t == "" {
			return nil, fmt.Errorf("configsync: token file %q is empty", s.tokenFile)
		}
		req.Header.Set("Authorization", "Bearer "+t)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL may carry a query token; we name the source ourselves
		}
		return nil, fmt.Errorf("configsync: fetching %s: %w", s.display, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified:
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, ErrNotModified
	case resp.StatusCode != http.StatusOK:
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("configsync: fetching %s: HTTP %d", s.display, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBundleBytes+1))
	if err != nil {
		return nil, fmt.Errorf("configsync: fetching %s: truncated answer: %w", s.display, err)
	}
	if resp.ContentLength >= 0 && int64(len(body)) != resp.ContentLength {
		return nil, fmt.Errorf("configsync: fetching %s: truncated answer (%d of %d bytes)", s.display, len(body), resp.ContentLength)
	}
	if len(body) > maxBundleBytes {
		return nil, fmt.Errorf("%w: answer larger than %d bytes", ErrInvalidBundle, maxBundleBytes)
	}
	newTag := resp.Header.Get("ETag")
	var snap *Snapshot
	if s.file != "" {
		if len(body) == 0 {
			return nil, ErrEmpty
		}
		snap = &Snapshot{Version: strings.Trim(strings.TrimPrefix(newTag, "W/"), `"`), Files: map[string]File{s.file: {Data: body, Mode: DefaultMode}}}
		if err := snap.check(); err != nil {
			return nil, err
		}
	} else {
		snap, err = ParseBundle(body)
		if err != nil {
			return nil, err
		}
		if snap.Version == "" {
			snap.Version = strings.Trim(strings.TrimPrefix(newTag, "W/"), `"`)
		}
	}
	h := snap.Hash()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.etag = newTag
	if h == s.lastHash {
		return nil, ErrNotModified // the server changed its ETag, not the content
	}
	s.lastHash = h
	return snap, nil
}

func (s *httpSource) Watch(ctx context.Context, updates chan<- Update) error {
	b := newBackoff(s.interval)
	for {
		start := time.Now()
		snap, err := s.Fetch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		send(ctx, updates, Update{Snapshot: snap, Err: err, Duration: time.Since(start)})
		wait := jitter(s.interval)
		if err != nil && !errors.Is(err, ErrNotModified) {
			wait = b.failure()
		} else {
			b.success()
		}
		if !sleep(ctx, wait) {
			return nil
		}
	}
}
