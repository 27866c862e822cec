package configsync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Notifier kinds.
const (
	NotifySignal = "signal"
	NotifyHTTP   = "http"
	NotifyExec   = "exec"
)

// Notifier is one parsed --notify value: how to tell the app to reload.
type Notifier struct {
	Kind string // NotifySignal, NotifyHTTP or NotifyExec

	Signal  syscall.Signal // signal: the signal to send
	Pidfile string         // signal: the pid is read from this file, or
	Process string         // signal: the one process whose executable is named this

	Method string // http: request method
	URL    string // http: URL; 2xx means reloaded

	Argv []string // exec: command and arguments

	spec string
}

// String returns the spec the Notifier was parsed from, with any URL
// credentials and query removed.
func (n *Notifier) String() string { return n.spec }

var signalNames = map[string]syscall.Signal{
	"HUP": syscall.SIGHUP, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2,
	"INT": syscall.SIGINT, "TERM": syscall.SIGTERM, "QUIT": syscall.SIGQUIT,
	"WINCH": syscall.SIGWINCH, "CONT": syscall.SIGCONT, "ALRM": syscall.SIGALRM,
}

// ParseNotifier parses a --notify value:
//
//	signal:HUP:pidfile=/run/app.pid   signal the pid in the file (checked to be the writer)
//	signal:HUP:process=NAME           signal the one process whose executable is NAME
//	http:POST:http://127.0.0.1:8080/-/reload   expect 2xx, retried
//	exec:/path/to/cmd arg…            run it; non-zero exit is a failure
//
// Errors wrap [ErrBadNotifySpec] and name the value.
func ParseNotifier(spec string) (*Notifier, error) {
	bad := func(why string) error { return fmt.Errorf("%w %q: %s", ErrBadNotifySpec, spec, why) }
	kind, rest, ok := strings.Cut(spec, ":")
	if !ok {
		return nil, bad("want signal:SIG:pidfile=PATH, signal:SIG:process=NAME, http:METHOD:URL or exec:COMMAND")
	}
	n := &Notifier{Kind: kind, spec: spec}
	switch kind {
	case NotifySignal:
		sig, target, ok := strings.Cut(rest, ":")
		if !ok {
			return nil, bad("want signal:SIG:pidfile=PATH or signal:SIG:process=NAME")
		}
		s, ok := signalNames[strings.TrimPrefix(sig, "SIG")]
		if !ok {
			return nil, bad(fmt.Sprintf("unknown signal %q (want HUP, USR1, USR2, INT, TERM, QUIT, WINCH, CONT or ALRM)", sig))
		}
		n.Signal = s
		key, val, _ := strings.Cut(target, "=")
		switch {
		case val == "":
			return nil, bad("empty target: want pidfile=PATH or process=NAME")
		case key == "pidfile":
			if !filepath.IsAbs(val) {
				return nil, bad("pidfile must be an absolute path")
			}
			n.Pidfile = filepath.Clean(val)
		case key == "process":
			if strings.ContainsAny(val, "/\x00") || len(val) > 255 {
				return nil, bad("process must be an executable name, not a path")
			}
			n.Process = val
		default:
			return nil, bad(fmt.Sprintf("unknown target %q: want pidfile=PATH or process=NAME", key))
		}
	case NotifyHTTP:
		method, raw, ok := strings.Cut(rest, ":")
		if !ok || method == "" || strings.Trim(method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
			return nil, bad("want http:METHOD:URL with an upper-case METHOD")
		}
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, bad("want an http(s)://host/path URL after the method")
		}
		n.Method, n.URL = method, raw
		d := *u
		d.User, d.RawQuery, d.Fragment = nil, "", ""
		n.spec = "http:" + method + ":" + d.String()
	case NotifyExec:
		argv, err := splitCommand(rest)
		if err != nil {
			return nil, bad(err.Error())
		}
		n.Argv = argv
	default:
		return nil, bad(fmt.Sprintf("unknown kind %q (want signal, http or exec)", kind))
	}
	return n, nil
}

// notify runs one notifier.
func (n *Notifier) notify(ctx context.Context, client *http.Client, timeout time.Duration) error {
	switch n.Kind {
	case NotifySignal:
		pid, what, err := n.findPID()
		if err != nil {
			return err
		}
		if err := syscall.Kill(pid, n.Signal); err != nil {
			if errors.Is(err, syscall.EPERM) {
				return fmt.Errorf("notify %s: signalling %s (pid %d): permission denied; configsync must run as the app's user or with CAP_KILL", n, what, pid)
			}
			return fmt.Errorf("notify %s: signalling %s (pid %d): %w", n, what, pid, err)
		}
		return nil
	case NotifyHTTP:
		return n.notifyHTTP(ctx, client, timeout)
	case NotifyExec:
		if err := runCommand(ctx, n.Argv, timeout); err != nil {
			return fmt.Errorf("notify %s: %w", n, err)
		}
		return nil
	}
	return fmt.Errorf("%w %q", ErrBadNotifySpec, n.spec)
}

func (n *Notifier) notifyHTTP(ctx context.Context, client *http.Client, timeout time.Duration) error {
	var last error
	delay := 250 * time.Millisecond
	for attempt := range 3 {
		if attempt > 0 && !sleep(ctx, delay) {
			return ctx.Err()
		}
		delay *= 2
		actx, cancel := context.WithTimeout(ctx, timeout)
		req, err := http.NewRequestWithContext(actx, n.Method, n.URL, http.NoBody)
		if err != nil {
			cancel()
			return fmt.Errorf("notify %s: %w", n, err)
		}
		resp, err := client.Do(req)
		if err != nil {
			cancel()
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // without the URL, which may carry a token
			}
			last = err
			continue
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		cancel()
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			return nil
		}
		last = fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return fmt.Errorf("notify %s: %w (after 3 attempts)", n, last)
}

// findPID resolves the signal target to one pid, refusing anything unsafe:
// PID 1 (the pause container under a shared PID namespace), ourselves, a
// stale pidfile, no or several processes of that name.
func (n *Notifier) findPID() (int, string, error) {
	if n.Pidfile != "" {
		return n.pidFromFile()
	}
	pids, pid1, err := procsNamed(n.Process)
	if err != nil {
		return 0, "", fmt.Errorf("notify %s: %w", n, err)
	}
	switch {
	case len(pids) == 1:
		return pids[0], fmt.Sprintf("process %q", n.Process), nil
	case len(pids) > 1:
		s := make([]string, len(pids))
		for i, p := range pids {
			s[i] = strconv.Itoa(p)
		}
		return 0, "", fmt.Errorf("notify %s: %w: %d processes are named %q (pids %s); refusing to guess, use pidfile=", n, ErrNoProcess, len(pids), n.Process, strings.Join(s, ", "))
	case pid1:
		return 0, "", fmt.Errorf("notify %s: %w: only PID 1 is named %q; refusing to signal PID 1", n, ErrNoProcess, n.Process)
	default:
		return 0, "", fmt.Errorf("notify %s: %w: no process is named %q (across containers this needs a shared PID namespace)", n, ErrNoProcess, n.Process)
	}
}

func (n *Notifier) pidFromFile() (int, string, error) {
	what := "pidfile " + n.Pidfile
	data, err := os.ReadFile(n.Pidfile)
	if err != nil {
		return 0, "", fmt.Errorf("notify %s: reading pidfile: %w", n, err)
	}
	st, err := os.Stat(n.Pidfile)
	if err != nil {
		return 0, "", fmt.Errorf("notify %s: reading pidfile: %w", n, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	switch {
	case err != nil || pid <= 0:
		return 0, "", fmt.Errorf("notify %s: %w: %s holds no pid", n, ErrNoProcess, what)
	case pid == 1:
		return 0, "", fmt.Errorf("notify %s: %w: %s names PID 1; refusing to signal PID 1", n, ErrNoProcess, what)
	case pid == os.Getpid():
		return 0, "", fmt.Errorf("notify %s: %w: %s names configsync itself", n, ErrNoProcess, what)
	}
	info, err := readProcStat(pid)
	if err != nil {
		return 0, "", fmt.Errorf("notify %s: %w: %s names pid %d, which is not running (stale pidfile)", n, ErrNoProcess, what, pid)
	}
	if info.state == 'Z' {
		return 0, "", fmt.Errorf("notify %s: %w: pid %d from %s has exited (zombie)", n, ErrNoProcess, pid, what)
	}
	// A process that started after the pidfile was written did not write
	// it: the pid was reused. The slack covers clock granularity.
	if start, ok := info.startTime(); ok && start.After(st.ModTime().Add(5*time.Second)) {
		return 0, "", fmt.Errorf("notify %s: %w: pid %d started after %s was written (stale pidfile, pid reused)", n, ErrNoProcess, pid, what)
	}
	return pid, fmt.Sprintf("%s (%s)", what, info.comm), nil
}

// procStat is what we need from /proc/PID/stat.
type procStat struct {
	comm       string
	state      byte
	startTicks uint64
}

func readProcStat(pid int) (procStat, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(data)
}

// parseProcStat parses /proc/PID/stat; comm may hold spaces and parentheses,
// so it is everything between the first '(' and the last ')'.
func parseProcStat(data []byte) (procStat, error) {
	open, close := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
	if open < 0 || close < open {
		return procStat{}, errors.New("malformed /proc stat")
	}
	fields := strings.Fields(string(data[close+1:]))
	// fields[0] is state (field 3); starttime is field 22 → fields[19].
	if len(fields) < 20 || len(fields[0]) != 1 {
		return procStat{}, errors.New("malformed /proc stat")
	}
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return procStat{}, errors.New("malformed /proc stat")
	}
	return procStat{comm: string(data[open+1 : close]), state: fields[0][0], startTicks: start}, nil
}

// startTime converts the start in clock ticks since boot to wall time. Linux
// reports USER_HZ = 100 on every architecture we build for.
func (p procStat) startTime() (time.Time, bool) {
	bt, err := bootTime()
	if err != nil {
		return time.Time{}, false
	}
	return bt.Add(time.Duration(p.startTicks) * (time.Second / 100)), true
}

func bootTime() (time.Time, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, err
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, err
			}
			return time.Unix(s, 0), nil
		}
	}
	return time.Time{}, errors.New("no btime in /proc/stat")
}

// procsNamed returns the live pids (not ours, not PID 1) whose executable's
// base name is exactly name, and whether PID 1 also matched. When a
// process's exe link is unreadable (another user's process) its comm is
// compared instead, if name is short enough that comm is not truncated.
func procsNamed(name string) (pids []int, pid1 bool, err error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, false, fmt.Errorf("listing processes: %w", err)
	}
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		info, err := readProcStat(pid)
		if err != nil || info.state == 'Z' {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		var match bool
		switch {
		case err == nil:
			match = filepath.Base(strings.TrimSuffix(exe, " (deleted)")) == name
		case errors.Is(err, fs.ErrPermission) && len(name) <= 15:
			match = info.comm == name
		}
		if !match {
			continue
		}
		if pid == 1 {
			pid1 = true
			continue
		}
		pids = append(pids, pid)
	}
	return pids, pid1, nil
}
