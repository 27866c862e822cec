package certs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// onDemandAskTimeout bounds one question to the ask URL; the client's
// handshake waits for it.
const onDemandAskTimeout = 10 * time.Second

// onDemand decides which names not known at start may get a certificate
// at their first handshake: at most maxNames of them, each allowed by a 2xx
// answer of the ask URL (GET ask?domain=NAME, as Caddy's ask), with at
// most ratePerMinute new orders in any minute. It is safe for concurrent
// use.
type onDemand struct {
	ask           *url.URL
	askName       string // ask without query or credentials, for messages (a token often rides in the query)
	client        *http.Client
	maxNames      int
	ratePerMinute int
	now           func() time.Time
	log           *slog.Logger
	m             *metrics

	mu     sync.Mutex
	names  map[string]bool // names allowed so far, at most maxNames
	orders []time.Time     // new orders within the last minute
}

func newOnDemand(cfg Config, m *metrics) (*onDemand, error) {
	u, err := url.Parse(cfg.OnDemandAsk)
	if err != nil {
		return nil, fmt.Errorf("--on-demand-ask: %w", err)
	}
	return &onDemand{
		ask:     u,
		askName: u.Scheme + "://" + u.Host + u.Path,
		// Its own client: no proxy from the environment, no redirects (a
		// 3xx is not a yes), a bounded wait.
		client: &http.Client{
			Timeout:       onDemandAskTimeout,
			Transport:     &http.Transport{Proxy: nil, MaxIdleConns: 4, IdleConnTimeout: time.Minute},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		maxNames:      cfg.OnDemandMaxNames,
		ratePerMinute: cfg.OnDemandRate,
		now:           cfg.Now,
		log:           cfg.Logger,
		m:             m,
		names:         map[string]bool{},
	}, nil
}

// decide is certmagic's OnDemand.DecisionFunc: nil allows a certificate
// for name (loading it from storage, or ordering it). It runs during the
// handshake of every name not in the cache.
func (o *onDemand) decide(ctx context.Context, name string) error {
	o.mu.Lock()
	known := o.names[name]
	full := len(o.names) >= o.maxNames
	o.mu.Unlock()
	if !known && full {
		return o.capped(name)
	}
	if err := o.askAllows(ctx, name); err != nil {
		// Debug: scanners try names all day; the counter shows the rate.
		o.m.onDemand.WithLabelValues(decisionRefused).Inc()
		o.log.Debug("on-demand certificate refused by the ask URL", "domain", name, "err", err)
		return err
	}
	o.mu.Lock()
	if !o.names[name] && len(o.names) >= o.maxNames {
		o.mu.Unlock()
		return o.capped(name)
	}
	o.names[name] = true
	o.mu.Unlock()
	o.m.onDemand.WithLabelValues(decisionAllowed).Inc()
	return nil
}

func (o *onDemand) capped(name string) error {
	o.m.onDemand.WithLabelValues(decisionCapped).Inc()
	o.log.Warn("on-demand certificate refused: name cap reached", "domain", name, "max_names", o.maxNames)
	return fmt.Errorf("%w: %d names already have on-demand certificates", ErrOnDemandCap, o.maxNames)
}

// askAllows asks the ask URL about name; nil means a 2xx answer.
func (o *onDemand) askAllows(ctx context.Context, name string) error {
	u := *o.ask
	q := u.Query()
	q.Set("domain", name)
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(ctx, onDemandAskTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := o.client.Do(req)
	if err != nil {
		// The ask service being down refuses: never order for names
		// nobody vouched for.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text repeats the URL, query and all
		}
		return fmt.Errorf("%w: asking %s: %w", ErrOnDemandRefused, o.askName, err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%w: %s answered %d for %s", ErrOnDemandRefused, o.askName, resp.StatusCode, name)
	}
	return nil
}

// allowOrder records a new order for an on-demand name and returns an
// error, without recording, when ratePerMinute orders were already made
// in the last minute.
func (o *onDemand) allowOrder(name string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now()
	cutoff := now.Add(-time.Minute)
	kept := o.orders[:0]
	for _, t := range o.orders {
		if t.After(cutoff) {
			kept = append(kept, t)
		}
	}
	o.orders = kept
	if len(o.orders) >= o.ratePerMinute {
		o.m.onDemand.WithLabelValues(decisionRateLimited).Inc()
		next := o.orders[0].Add(time.Minute)
		return fmt.Errorf("%w: %d new on-demand orders in the last minute (limit %d); %s can be ordered after %s",
			ErrOnDemandRate, len(o.orders), o.ratePerMinute, name, next.UTC().Format(time.RFC3339))
	}
	o.orders = append(o.orders, now)
	return nil
}

// knows reports whether name was allowed on demand.
func (o *onDemand) knows(name string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.names[name]
}

// allNames returns the names allowed so far.
func (o *onDemand) allNames() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]string, 0, len(o.names))
	for n := range o.names {
		out = append(out, n)
	}
	return out
}

// validateOnDemand reports the problems of the on-demand fields.
func (c Config) validateOnDemand() []error {
	if c.OnDemandAsk == "" {
		return nil
	}
	var errs []error
	if u, err := url.Parse(c.OnDemandAsk); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("--on-demand-ask %q is not an http(s) URL", c.OnDemandAsk))
	}
	if c.CertFile != "" || c.Internal {
		errs = append(errs, errors.New("--on-demand-ask obtains ACME certificates; it cannot be combined with --cert or --tls-internal"))
	}
	if c.OnDemandMaxNames < 0 || c.OnDemandRate < 0 {
		errs = append(errs, errors.New("--on-demand-max-names and --on-demand-rate must be at least 1"))
	}
	return errs
}
