package configsync

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	// versionsDirName holds one JSON file per applied version, named
	// <applied-at>-<hash prefix>.json so that names sort by age.
	versionsDirName = "versions"
	// lastGoodName is the single file older releases kept; it is read when
	// no versions are saved yet, and removed by the next save.
	lastGoodName  = "last-good.json"
	stateTimeFmt  = "20060102T150405.000000000Z"
	stateHashPart = 16
)

// stateStore keeps the last versions that passed validate, notify and
// health, newest first, each as one JSON file written atomically and only
// readable by its owner (versions may hold secrets). A zero dir keeps
// nothing.
type stateStore struct {
	dir  string
	keep int // how many versions; at least 1
}

// savedVersion is one version of the history.
type savedVersion struct {
	Snap      *Snapshot
	AppliedAt time.Time
}

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

// save records snap as the newest version: an older copy of the same
// content is dropped, and versions beyond keep are removed, oldest first.
func (s stateStore) save(snap *Snapshot, at time.Time) error {
	if s.dir == "" {
		return nil
	}
	vdir := filepath.Join(s.dir, versionsDirName)
	if err := os.MkdirAll(vdir, 0o700); err != nil {
		return fmt.Errorf("configsync: saving state: %w", err)
	}
	hash := snap.Hash()
	sf := stateFile{Version: snap.Version, Hash: hash, AppliedAt: at.UTC(), Files: map[string]stateItem{}}
	for n, f := range snap.Files {
		sf.Files[n] = stateItem{Mode: fmt.Sprintf("%04o", uint32(f.Mode.Perm())), Data: f.Data}
	}
	data, err := json.Marshal(sf)
	if err != nil {
		return fmt.Errorf("configsync: saving state: %w", err)
	}
	name := at.UTC().Format(stateTimeFmt) + "-" + hash[:stateHashPart] + ".json"
	if err := writeFileAtomic(filepath.Join(vdir, name), data, 0o600); err != nil {
		return fmt.Errorf("configsync: saving state: %w", err)
	}
	names, err := s.names()
	if err != nil {
		return fmt.Errorf("configsync: saving state: %w", err)
	}
	var errs []error
	kept := 1                 // the one just written, whatever the clock says
	for _, n := range names { // newest first
		if n == name {
			continue
		}
		sameContent := strings.HasSuffix(n, "-"+hash[:stateHashPart]+".json")
		if !sameContent && kept < s.keep {
			kept++
			continue
		}
		if err := os.Remove(filepath.Join(vdir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(filepath.Join(s.dir, lastGoodName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("configsync: pruning saved versions: %w", errors.Join(errs...))
	}
	return nil
}

// names lists the saved version files, newest first.
func (s stateStore) names() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(s.dir, versionsDirName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if n := e.Name(); e.Type().IsRegular() && strings.HasSuffix(n, ".json") && !strings.HasPrefix(n, ".") {
			names = append(names, n)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(names)))
	return names, nil
}

// history returns the saved versions, newest first. Files that cannot be
// read or fail their own hash are left out, and reported in err alongside
// the versions that could be read.
func (s stateStore) history() ([]savedVersion, error) {
	if s.dir == "" {
		return nil, nil
	}
	names, err := s.names()
	if err != nil {
		return nil, fmt.Errorf("configsync: loading state: %w", err)
	}
	paths := make([]string, 0, len(names)+1)
	for _, n := range names {
		paths = append(paths, filepath.Join(s.dir, versionsDirName, n))
	}
	if len(paths) == 0 {
		paths = append(paths, filepath.Join(s.dir, lastGoodName))
	}
	var out []savedVersion
	var errs []error
	for _, p := range paths {
		v, err := loadStateFile(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			errs = append(errs, err)
		default:
			out = append(out, v)
		}
	}
	return out, errors.Join(errs...)
}

// load returns the newest saved version that can be read, nil when there is
// none, and what was wrong with newer ones.
func (s stateStore) load() (*Snapshot, time.Time, error) {
	h, err := s.history()
	if len(h) == 0 {
		return nil, time.Time{}, err
	}
	return h[0].Snap, h[0].AppliedAt, err
}

func loadStateFile(p string) (savedVersion, error) {
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return savedVersion{}, err
	}
	name := filepath.Base(p)
	if err != nil {
		return savedVersion{}, fmt.Errorf("configsync: loading state: %w", err)
	}
	var sf stateFile
	if err := json.Unmarshal(data, &sf); err != nil {
		return savedVersion{}, fmt.Errorf("configsync: loading state %s: %s", name, jsonErr(err))
	}
	snap := &Snapshot{Version: sf.Version, Files: map[string]File{}}
	for n, it := range sf.Files {
		m, err := strconv.ParseUint(it.Mode, 8, 32)
		if err != nil || m > 0o777 {
			return savedVersion{}, fmt.Errorf("configsync: loading state %s: file %q: bad mode %q", name, n, it.Mode)
		}
		snap.Files[n] = File{Data: it.Data, Mode: fs.FileMode(m)}
	}
	if err := snap.check(); err != nil {
		return savedVersion{}, fmt.Errorf("configsync: loading state %s: %w", name, err)
	}
	if snap.Hash() != sf.Hash {
		return savedVersion{}, fmt.Errorf("configsync: loading state %s: content does not match its recorded hash", name)
	}
	return savedVersion{Snap: snap, AppliedAt: sf.AppliedAt}, nil
}
