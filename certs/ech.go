package certs

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"golang.org/x/crypto/cryptobyte"
)

// Encrypted Client Hello (RFC 9849, draft-ietf-tls-esni) with Go's own
// server support: the keys live in storage, so replicas sharing it share
// them; the newest key is the one published, older keys are still
// accepted for a grace period after they are replaced.

// echKeysKey is where the ECH keys are kept in storage.
const echKeysKey = "outrider/ech/keys.json"

// echLockKey serializes rotation between replicas.
const echLockKey = "outrider-ech-keys"

// ECH parameters: DHKEM(X25519, HKDF-SHA256) with HKDF-SHA256 and either
// AES-128-GCM or ChaCha20-Poly1305, the suites every ECH client offers.
const (
	echVersion       = 0xfe0d
	echKEMX25519     = 0x0020
	echKDFHKDFSHA256 = 0x0001
	echAEADAES128GCM = 0x0001
	echAEADChaCha20  = 0x0003
)

// echKey is one ECH key as stored. Config is the marshalled ECHConfig
// clients get, byte for byte; PrivateKey is the raw X25519 private key
// (secret: never logged).
type echKey struct {
	ID         uint8     `json:"id"`
	Config     []byte    `json:"config"`
	PrivateKey []byte    `json:"private_key"`
	Created    time.Time `json:"created"`
}

type echKeyFile struct {
	PublicName string   `json:"public_name"`
	Keys       []echKey `json:"keys"` // newest first
}

// echKeys manages the ECH keys of one public name. It is safe for
// concurrent use: handshakes read the installed keys lock-free.
type echKeys struct {
	publicName    string
	rotate, grace time.Duration
	storage       certmagic.Storage
	log           *slog.Logger
	now           func() time.Time

	keys atomic.Pointer[[]tls.EncryptedClientHelloKey] // current first
	list atomic.Pointer[[]byte]                        // ECHConfigList of the current key
}

func newECHKeys(cfg Config) (*echKeys, error) {
	st, err := openStorage(cfg.Storage, cfg.Etcd)
	if err != nil {
		return nil, fmt.Errorf("--ech keeps its keys in --storage: %w", err)
	}
	return &echKeys{publicName: cfg.ECHPublicName, rotate: cfg.ECHRotateInterval, grace: cfg.ECHGrace,
		storage: st, log: cfg.Logger, now: cfg.Now}, nil
}

// getKeys is for tls.Config.GetEncryptedClientHelloKeys.
func (e *echKeys) getKeys(*tls.ClientHelloInfo) ([]tls.EncryptedClientHelloKey, error) {
	if k := e.keys.Load(); k != nil {
		return *k, nil
	}
	return []tls.EncryptedClientHelloKey{}, nil // ECH rejected until keys load; the handshake goes on
}

// configList returns the published ECHConfigList, or nil before the keys
// are loaded.
func (e *echKeys) configList() []byte {
	if l := e.list.Load(); l != nil {
		return *l
	}
	return nil
}

// maintain loads the keys from storage, creating or rotating them when
// due, drops keys past their grace period, and installs the result. It
// takes the storage lock only when something must change, so replicas
// checking every minute do not write to storage.
func (e *echKeys) maintain(ctx context.Context) error {
	f, err := loadECHKeys(ctx, e.storage)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if !e.due(f, e.now()) {
		e.install(f)
		return nil
	}
	if err := e.storage.Lock(ctx, echLockKey); err != nil {
		return fmt.Errorf("locking ECH keys: %w", err)
	}
	defer e.storage.Unlock(context.WithoutCancel(ctx), echLockKey)
	// Again under the lock: another replica may have rotated meanwhile.
	f, err = loadECHKeys(ctx, e.storage)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, changed, err := e.next(f, e.now())
	if err != nil {
		return err
	}
	if changed {
		b, err := json.Marshal(f)
		if err != nil {
			return err
		}
		if err := e.storage.Store(ctx, echKeysKey, b); err != nil {
			return fmt.Errorf("storing ECH keys: %w", err)
		}
		e.log.Info("ECH keys updated; publish the current ECHConfigList (outrider ech config)",
			"public_name", e.publicName, "config_id", f.Keys[0].ID, "keys_accepted", len(f.Keys))
	}
	e.install(f)
	return nil
}

// due reports whether f needs a new key or has a key past its grace.
func (e *echKeys) due(f echKeyFile, now time.Time) bool {
	if f.PublicName != e.publicName || len(f.Keys) == 0 || now.Sub(f.Keys[0].Created) >= e.rotate {
		return true
	}
	for i := 1; i < len(f.Keys); i++ {
		if now.Sub(f.Keys[i-1].Created) >= e.grace {
			return true
		}
	}
	return false
}

// next returns f as it should be at now: a new key first when there is
// none, the public name changed or the newest is rotate old; replaced keys
// dropped grace after their successor appeared. changed reports whether it
// differs from f.
func (e *echKeys) next(f echKeyFile, now time.Time) (_ echKeyFile, changed bool, _ error) {
	keys := slices.Clone(f.Keys)
	if f.PublicName != e.publicName || len(keys) == 0 || now.Sub(keys[0].Created) >= e.rotate {
		// A new public name needs configs naming it; old keys stay
		// accepted for their grace period.
		k, err := newECHKey(e.publicName, keys, now)
		if err != nil {
			return f, false, err
		}
		keys = append([]echKey{k}, keys...)
		changed = true
	}
	kept := keys[:1]
	for i := 1; i < len(keys); i++ {
		if now.Sub(keys[i-1].Created) < e.grace {
			kept = append(kept, keys[i])
		} else {
			changed = true
		}
	}
	return echKeyFile{PublicName: e.publicName, Keys: kept}, changed, nil
}

// install makes f's keys the ones handshakes use.
func (e *echKeys) install(f echKeyFile) {
	keys := make([]tls.EncryptedClientHelloKey, 0, len(f.Keys))
	for i, k := range f.Keys {
		// Only the current key is sent as a retry config: a client whose
		// config was rejected learns the one to use now.
		keys = append(keys, tls.EncryptedClientHelloKey{Config: k.Config, PrivateKey: k.PrivateKey, SendAsRetry: i == 0})
	}
	list := echConfigList(f.Keys[0].Config)
	e.keys.Store(&keys)
	e.list.Store(&list)
}

// run keeps the keys rotated and in step with storage (another replica
// may rotate them) until ctx is done.
func (e *echKeys) run(ctx context.Context) error {
	tick := time.NewTicker(max(min(e.rotate/20, time.Minute), time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := e.maintain(ctx); err != nil && ctx.Err() == nil {
				e.log.Warn("maintaining ECH keys; keeping the current ones", "err", err)
			}
		}
	}
}

func loadECHKeys(ctx context.Context, st certmagic.Storage) (echKeyFile, error) {
	var f echKeyFile
	b, err := st.Load(ctx, echKeysKey)
	if err != nil {
		return f, err
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return echKeyFile{}, fmt.Errorf("decoding %s: %w", echKeysKey, err)
	}
	return f, nil
}

// newECHKey generates an X25519 key with a config ID not used by existing.
func newECHKey(publicName string, existing []echKey, now time.Time) (echKey, error) {
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return echKey{}, fmt.Errorf("generating ECH key: %w", err)
	}
	var id [1]byte
	for {
		rand.Read(id[:])
		if !slices.ContainsFunc(existing, func(k echKey) bool { return k.ID == id[0] }) {
			break
		}
	}
	cfg, err := marshalECHConfig(id[0], priv.PublicKey().Bytes(), publicName)
	if err != nil {
		return echKey{}, err
	}
	return echKey{ID: id[0], Config: cfg, PrivateKey: priv.Bytes(), Created: now.UTC()}, nil
}

// marshalECHConfig encodes one ECHConfig (draft-ietf-tls-esni-25 §4).
func marshalECHConfig(id uint8, publicKey []byte, publicName string) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddUint16(echVersion)
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint8(id)
		b.AddUint16(echKEMX25519)
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(publicKey) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, aead := range []uint16{echAEADAES128GCM, echAEADChaCha20} {
				b.AddUint16(echKDFHKDFSHA256)
				b.AddUint16(aead)
			}
		})
		b.AddUint8(0) // maximum_name_length: unknown, clients pad to their default
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(publicName)) })
		b.AddUint16(0) // no extensions
	})
	return b.Bytes()
}

// echConfigList wraps configs in an ECHConfigList, the value of an HTTPS
// record's ech parameter.
func echConfigList(configs ...[]byte) []byte {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, c := range configs {
			b.AddBytes(c)
		}
	})
	return b.BytesOrPanic() // lengths are bounded: one 32-byte key and a host name
}

// ECHConfigList reads the ECHConfigList published for the ECH keys kept in
// storage by `outrider proxy --ech` (the value for an HTTPS DNS record's
// ech= parameter, before base64). It returns an error wrapping
// fs.ErrNotExist when no keys were created there.
func ECHConfigList(ctx context.Context, storage string, etcd EtcdConfig) ([]byte, error) {
	st, err := openStorage(storage, etcd)
	if err != nil {
		return nil, err
	}
	f, err := loadECHKeys(ctx, st)
	if errors.Is(err, fs.ErrNotExist) || err == nil && len(f.Keys) == 0 {
		return nil, fmt.Errorf("no ECH keys in %s (outrider proxy --ech creates them): %w", storage, fs.ErrNotExist)
	}
	if err != nil {
		return nil, err
	}
	return echConfigList(f.Keys[0].Config), nil
}

// validateECH reports the problems of the ECH fields.
func (c Config) validateECH() []error {
	if c.ECHPublicName == "" {
		return nil
	}
	var errs []error
	if err := checkName(c.ECHPublicName); err != nil || certmagic.SubjectIsIP(c.ECHPublicName) || c.ECHPublicName[0] == '*' {
		errs = append(errs, fmt.Errorf("--ech %q: the public name must be a DNS name (not an IP address or wildcard)", c.ECHPublicName))
	}
	if c.ECHRotateInterval < 0 || c.ECHGrace < 0 {
		errs = append(errs, errors.New("--ech-rotate-interval and --ech-grace must be longer than 0"))
	}
	return errs
}
