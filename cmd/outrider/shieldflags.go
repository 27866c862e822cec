package main

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/outrider-dev/outrider/proxy"
)

// limitFlags checks --max-inflight, --queue-timeout, --rate-limit and
// --rate-burst and returns them as the proxy.Config fields they fill.
func limitFlags(fs *flagSet, maxInflight int, queueTimeout time.Duration, rate string, burst int) (proxy.Config, error) {
	var cfg proxy.Config
	if maxInflight < 0 {
		return cfg, fmt.Errorf("invalid value \"%d\" for flag --max-inflight: want 0 (no cap) or more", maxInflight)
	}
	if queueTimeout == 0 {
		return cfg, errors.New(`invalid value "0s" for flag --queue-timeout: must be positive`)
	}
	if fs.isSet("queue-timeout") && maxInflight == 0 {
		return cfg, errors.New("--queue-timeout needs --max-inflight: there is no queue without a cap")
	}
	cfg.MaxInflight, cfg.QueueTimeout = maxInflight, queueTimeout
	if burst < 0 {
		return cfg, fmt.Errorf("invalid value \"%d\" for flag --rate-burst: want 1 or more (0: the rate's number)", burst)
	}
	if rate == "" {
		if fs.isSet("rate-burst") {
			return cfg, errors.New("--rate-burst needs --rate-limit")
		}
		return cfg, nil
	}
	r, err := proxy.ParseRate(rate)
	if err != nil {
		return cfg, fmt.Errorf("invalid value for flag --rate-limit: %w", err)
	}
	cfg.RateLimit, cfg.RateBurst = r, burst
	return cfg, nil
}

// flagIfSet returns v when the flag was given, else "": a default shown in
// -h (such as --client-auth require) that only applies with another flag.
func flagIfSet(fs *flagSet, name, v string) string {
	if fs.isSet(name) {
		return v
	}
	return ""
}

// sizeFlag is a size in bytes with an optional k, m or g suffix.
type sizeFlag struct{ n *int64 }

func sizeVar(fs *flagSet, name string, def int64, usage string) *int64 {
	n := &def
	fs.Var(&sizeFlag{n}, name, usage)
	return n
}

func (s *sizeFlag) String() string {
	if s == nil || s.n == nil {
		return ""
	}
	return strconv.FormatInt(*s.n, 10)
}

func (s *sizeFlag) Set(v string) error {
	n, err := proxy.ParseSize(v)
	if err != nil {
		return errors.New(s.want())
	}
	*s.n = n
	return nil
}

func (s *sizeFlag) want() string {
	return "want bytes, or a number with k, m or g (such as 64k or 10MiB)"
}
