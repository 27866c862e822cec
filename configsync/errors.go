package configsync

import "errors"

var (
	// ErrNotModified is returned by [Source.Fetch] when the source says, or
	// the content hash shows, that nothing changed since the last fetch.
	ErrNotModified = errors.New("configsync: not modified")
	// ErrEmpty means the source answered with no files or an empty body.
	// An empty answer never replaces the files.
	ErrEmpty = errors.New("configsync: empty answer from source")
	// ErrInvalidBundle means the answer could not be parsed, was truncated,
	// or broke a rule (bad path, bad mode); the whole bundle is rejected.
	ErrInvalidBundle = errors.New("configsync: invalid bundle")
	// ErrUnsafePath means a file path would leave the target directory
	// (absolute, "..", through a symlink) or uses a reserved name.
	ErrUnsafePath = errors.New("configsync: unsafe path")
	// ErrValidateFailed means the --validate command refused a version.
	ErrValidateFailed = errors.New("configsync: validate command failed")
	// ErrUnhealthy means the app did not answer 2xx on the health URL in time
	// after being notified.
	ErrUnhealthy = errors.New("configsync: app unhealthy after reload")
	// ErrBadNotifySpec means a --notify value could not be parsed.
	ErrBadNotifySpec = errors.New("configsync: invalid notify spec")
	// ErrNoProcess means a notify target matched no process, several
	// processes, or one that must never be signalled.
	ErrNoProcess = errors.New("configsync: notify target process")
	// ErrNotRunning is returned by [Syncer.Reload] when Run is not running.
	ErrNotRunning = errors.New("configsync: not running")
)
