//go:build unix

package embed

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time the process has used (user and system), or 0 when unknown.
// Benchmarks report throughput per CPU second besides per wall second, which stays
// meaningful on a machine busy with other work.
func cpuTime() time.Duration {
	var u syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &u) != nil {
		return 0
	}
	return time.Duration(u.Utime.Nano() + u.Stime.Nano())
}
