//go:build !linux

package embedpg

import "syscall"

// Without a parent-death signal, PostgreSQL is stopped by strata's shutdown path, and an
// orphan left by a killed strata is detected and waited for at the next start.
func sysProcAttr(o owner) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: o.cred, Setpgid: true}
}
