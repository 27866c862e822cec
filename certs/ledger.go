package certs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
)

// ledgerWindow is the period over which duplicate certificates are counted,
// as Let's Encrypt's duplicate-certificate limit does.
const ledgerWindow = 7 * 24 * time.Hour

// ledger records, in storage, every certificate obtained per name set, so
// that a loop of re-orders (lost certificate storage, a crash loop, a bug)
// is stopped by us before the CA's rate limit locks the names out for a
// week. Being in storage, the record is shared by every replica that
// shares the storage.
type ledger struct {
	storage certmagic.Storage
	now     func() time.Time
}

type ledgerEntry struct {
	Names  []string    `json:"names"`
	Issued []time.Time `json:"issued"`
}

func ledgerKey(names []string) (key string, sorted []string) {
	sorted = slices.Clone(names)
	for i, n := range sorted {
		sorted[i] = strings.ToLower(n)
	}
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	sum := sha256.Sum256([]byte(strings.Join(sorted, ",")))
	return "outrider/ledger/" + hex.EncodeToString(sum[:12]) + ".json", sorted
}

// recent returns the certificates obtained for names within ledgerWindow.
func (l *ledger) recent(ctx context.Context, names []string) ([]time.Time, error) {
	key, _ := ledgerKey(names)
	b, err := l.storage.Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading order ledger: %w", err)
	}
	var e ledgerEntry
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("decoding order ledger %s: %w", key, err)
	}
	cutoff := l.now().Add(-ledgerWindow)
	return slices.DeleteFunc(e.Issued, func(t time.Time) bool { return t.Before(cutoff) }), nil
}

// record adds an obtained certificate for names, dropping entries older
// than the window.
func (l *ledger) record(ctx context.Context, names []string) (int, error) {
	key, sorted := ledgerKey(names)
	lockKey := "outrider-ledger-" + strings.TrimSuffix(strings.TrimPrefix(key, "outrider/ledger/"), ".json")
	if err := l.storage.Lock(ctx, lockKey); err != nil {
		return 0, fmt.Errorf("locking order ledger: %w", err)
	}
	defer l.storage.Unlock(context.WithoutCancel(ctx), lockKey)
	issued, err := l.recent(ctx, names)
	if err != nil {
		issued = nil // a corrupt ledger is rewritten rather than blocking issuance forever
	}
	issued = append(issued, l.now().UTC())
	b, err := json.Marshal(ledgerEntry{Names: sorted, Issued: issued})
	if err != nil {
		return 0, err
	}
	if err := l.storage.Store(ctx, key, b); err != nil {
		return 0, fmt.Errorf("writing order ledger: %w", err)
	}
	return len(issued), nil
}
