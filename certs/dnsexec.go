package certs

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/libdns/libdns"
)

// execTimeout bounds one run of an exec DNS provider's command.
const execTimeout = time.Minute

// execProvider is a libdns provider that runs an operator's command for
// each TXT record: `cmd present FQDN VALUE` to create it, `cmd cleanup FQDN
// VALUE` to remove it, so that any DNS API can be reached by a script the
// operator already has. FQDN ends with a dot. Runs are serialized: a
// script never runs twice at once. A non-zero exit is an error carrying
// the first line the command printed.
//
// The command inherits outrider's environment (where a DNS API's token
// usually comes from) and has a minute per run.
type execProvider struct {
	path string
	log  *slog.Logger
	mu   sync.Mutex
}

func (p *execProvider) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	for _, r := range recs {
		rr := r.RR()
		if err := p.run(ctx, "present", libdns.AbsoluteName(rr.Name, zone), rr.Data); err != nil {
			return nil, err
		}
	}
	return recs, nil
}

func (p *execProvider) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	for _, r := range recs {
		rr := r.RR()
		if err := p.run(ctx, "cleanup", libdns.AbsoluteName(rr.Name, zone), rr.Data); err != nil {
			return nil, err
		}
	}
	return recs, nil
}

func (p *execProvider) run(ctx context.Context, action, fqdn, value string) error {
	if !strings.HasSuffix(fqdn, ".") {
		fqdn += "."
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, execTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.path, action, fqdn, value)
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	began := time.Now()
	err := cmd.Run()
	if err != nil {
		line, _, _ := strings.Cut(strings.TrimSpace(out.String()), "\n")
		if len(line) > 200 {
			line = line[:200] + "…"
		}
		if line != "" {
			return fmt.Errorf("running %s %s %s: %w: %s", p.path, action, fqdn, err, line)
		}
		return fmt.Errorf("running %s %s %s: %w", p.path, action, fqdn, err)
	}
	p.log.Debug("dns command ran", "action", action, "fqdn", fqdn, "duration_seconds", time.Since(began).Seconds())
	return nil
}

var (
	_ libdns.RecordAppender = (*execProvider)(nil)
	_ libdns.RecordDeleter  = (*execProvider)(nil)
)
