package embedpg

import "syscall"

func sysProcAttr(o owner) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Credential: o.cred,
		Pdeathsig:  syscall.SIGINT, // fast shutdown when strata dies, however it dies
		Setpgid:    true,           // a Ctrl-C at the terminal reaches strata, which stops PostgreSQL in order
	}
}
