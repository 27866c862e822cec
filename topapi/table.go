package topapi

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// writeTable writes a top-like table: a summary, then one row per process.
func writeTable(w io.Writer, s *Snapshot) {
	h := s.Host
	fmt.Fprintf(w, "top - %s up %s, load average: %.2f, %.2f, %.2f\n",
		s.Time.Local().Format("15:04:05"), fmtUptime(h.UptimeSeconds), h.Load1, h.Load5, h.Load15)
	fmt.Fprintf(w, "Tasks: %d (scope %s)   CPU: %.1f%% of %g cores   Mem: %s used of %s   Swap: %s free of %s   [%s figures]\n",
		h.ProcessCount, s.Scope, h.CPUPercent, h.CPULimitCores, fmtBytes(h.MemoryUsedBytes), fmtBytes(h.MemoryLimitBytes),
		fmtBytes(h.SwapFreeBytes), fmtBytes(h.SwapTotalBytes), h.Source)
	if cg := h.Cgroup; cg != nil {
		quota := "none"
		if cg.CPUQuotaCores != nil {
			quota = fmt.Sprintf("%g cores", *cg.CPUQuotaCores)
		}
		limit := "none"
		if cg.MemoryMaxBytes != nil {
			limit = fmtBytes(*cg.MemoryMaxBytes)
		}
		fmt.Fprintf(w, "Cgroup %s: CPU quota %s, throttled %.1fs   memory %s of limit %s, OOM kills %d\n",
			cg.Path, quota, cg.ThrottledSecondsTotal, fmtBytes(cg.MemoryCurrentBytes), limit, cg.OOMKillsTotal)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "PID\tPPID\tUSER\tS\t%CPU\tRSS\tTHR\tTIME+\t\tCOMMAND\n")
	for _, p := range s.Processes {
		cmd := strings.Join(p.Cmdline, " ")
		if cmd == "" {
			cmd = "[" + p.Name + "]"
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%.1f\t%s\t%d\t%s\t\t%s\n", p.PID, p.PPID, truncate(p.User, 8), p.State,
			p.CPUPercent, fmtBytes(p.RSSBytes), p.Threads, fmtCPUTime(p.CPUSecondsTotal), truncate(cmd, 120))
	}
	tw.Flush()
}

func fmtBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	f, i := float64(n), 0
	for f >= unit && i < 4 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f%c", f, "BKMGT"[i])
}

func fmtUptime(sec float64) string {
	d := time.Duration(sec) * time.Second
	days := int(d.Hours()) / 24
	if days > 0 {
		return fmt.Sprintf("%dd %dh", days, int(d.Hours())%24)
	}
	return fmt.Sprintf("%d:%02d", int(d.Hours()), int(d.Minutes())%60)
}

func fmtCPUTime(sec float64) string {
	m := int(sec) / 60
	return fmt.Sprintf("%d:%05.2f", m, sec-float64(m*60))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
