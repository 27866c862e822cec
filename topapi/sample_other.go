//go:build !linux

package topapi

type scanner struct{}

func newScanner(Config) (*scanner, error) { return nil, ErrUnsupported }

func (*scanner) sample() (*Snapshot, error) { return nil, ErrUnsupported }
