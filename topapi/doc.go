// Package topapi serves a uniform, authenticated view of a host's processes
// and resources: the /top endpoint of outrider, in JSON, as a top-like text
// table, as a live HTML page, and as Prometheus metrics.
//
// One [Sampler] scans /proc (through github.com/prometheus/procfs) and the
// cgroup v2 files of its own container on a fixed interval and publishes an
// immutable [Snapshot]; every request and every scrape reads the latest
// snapshot and never touches /proc itself. CPU percentages are measured
// between two samples, like top, and the sampler takes its first two samples
// half a second apart so the first answer already carries real figures.
//
// Per tick, only /proc/PID/stat is read for each process; the command line
// and user are read once per process (keyed by PID and start time), and the
// environment is never read. Command lines are redacted (see [Redact]).
//
// [Handler] adds bearer-token authentication and the output formats; it sets
// no CORS headers. The package opens no listeners: callers mount the Handler
// (at /top and /top/) and run [Sampler.Run] under their own lifecycle.
//
// Process scanning is implemented for Linux only; elsewhere [New] returns
// [ErrUnsupported].
package topapi
