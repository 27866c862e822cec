package configsync

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

const lastGoodName = "last-good.json"

// stateStore keeps the last version that passed validate, notify and health,
// as one JSON file replaced atomically. A zero dir keeps nothing.
type stateStore struct{ dir string }

type stateFile struct {
	Version   string               `json:"version"`
	Hash      string               `json:"hash"`
	AppliedAt time.Time            `json:"applied_at"`
	Files     map[string]stateItem `json:"files"`
}

type stateItem struct {
	Mode string `json:"mode"`
	Data []byte `json:"data"` // base64 in JSON
}

func (s stateStore) save(snap *Snapshot, at time.Time) error {
	if s.dir == "" {
		return nil
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("configsync: saving state: %w", err)
	}
	sf := stateFile{Version: snap.Version, Hash: snap.Hash(), AppliedAt: at.UTC(), Files: map[string]stateItem{}}
	for n, f := range snap.Files {
		sf.Files[n] = stateItem{Mode: fmt.Sprintf("%04o", uint32(f.Mode.Perm())), Data: f.Data}
	}
	data, err := json.Marshal(sf)
	if err != nil {
		return fmt.Errorf("configsync: saving state: %w", err)
	}
	// The state may hold secrets: only the owner reads it.
	if err := writeFileAtomic(filepath.Join(s.dir, lastGoodName), data, 0o600); err != nil {
		return fmt.Errorf("configsync: saving state: %w", err)
	}
	return nil
}

// load returns the saved version, nil when there is none, or an error when
// the file is unreadable or fails its own hash.
func (s stateStore) load() (*Snapshot, time.Time, error) {
	if s.dir == "" {
		return nil, time.Time{}, nil
	}
	data, err := os.ReadFile(filepath.Join(s.dir, lastGoodName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, time.Time{}, nil
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("configsync: loading state: %w", err)
	}
	var sf stateFile
	if err := json.Unmarshal(data, &sf); err != nil {
		return nil, time.Time{}, fmt.Errorf("configsync: loading state %s: %s", lastGoodName, jsonErr(err))
	}
	snap := &Snapshot{Version: sf.Version, Files: map[string]File{}}
	for n, it := range sf.Files {
		m, err := strconv.ParseUint(it.Mode, 8, 32)
		if err != nil || m > 0o777 {
			return nil, time.Time{}, fmt.Errorf("configsync: loading state: file %q: bad mode %q", n, it.Mode)
		}
		snap.Files[n] = File{Data: it.Data, Mode: fs.FileMode(m)}
	}
	if err := snap.check(); err != nil {
		return nil, time.Time{}, fmt.Errorf("configsync: loading state: %w", err)
	}
	if snap.Hash() != sf.Hash {
		return nil, time.Time{}, errors.New("configsync: loading state: content does not match its recorded hash")
	}
	return snap, sf.AppliedAt, nil
}
