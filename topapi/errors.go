package topapi

import "errors"

var (
	// ErrUnsupported is returned by New on systems without Linux /proc.
	ErrUnsupported = errors.New("topapi: process sampling is only supported on Linux")
	// ErrBadScope is wrapped by ParseScope for a scope it does not know.
	ErrBadScope = errors.New("topapi: invalid scope")
	// ErrNoSample is returned while the sampler has not published a sample yet.
	ErrNoSample = errors.New("topapi: no sample taken yet")
)
