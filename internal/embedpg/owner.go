package embedpg

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// owner is the OS identity PostgreSQL runs as. PostgreSQL refuses to run as root, so when
// strata is root the server runs as an unprivileged user; otherwise as strata's own user.
type owner struct {
	name string
	uid  uint32
	gid  uint32
	// cred is set only when strata is root and must switch users for its children.
	cred *syscall.Credential
}

// resolveOwner picks the user PostgreSQL runs as: the current user, or when root the named
// user, defaulting to "postgres" and then "nobody".
func resolveOwner(name string) (owner, error) {
	if os.Geteuid() != 0 {
		u, _ := user.Current()
		o := owner{uid: uint32(os.Geteuid()), gid: uint32(os.Getegid())}
		if u != nil {
			o.name = u.Username
		}
		return o, nil
	}
	names := []string{name}
	if name == "" {
		names = []string{"postgres", "nobody"}
	}
	var firstErr error
	for _, n := range names {
		u, err := user.Lookup(n)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		if uid == 0 {
			return owner{}, fmt.Errorf("--pg-user %q is root; PostgreSQL must run as an unprivileged user", n)
		}
		if n == "nobody" {
			slog.Warn("PostgreSQL will run as the shared user nobody; create a dedicated user (for example postgres) and name it with --pg-user")
		}
		return owner{name: n, uid: uint32(uid), gid: uint32(gid), cred: &syscall.Credential{
			Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{uint32(gid)},
		}}, nil
	}
	return owner{}, fmt.Errorf("strata runs as root, so PostgreSQL must run as an unprivileged user, "+
		"but user %q does not exist (%v); create it or name another with --pg-user (STRATA_PG_USER)", names[0], firstErr)
}

// switching reports whether children run as a different user than strata.
func (o owner) switching() bool { return o.cred != nil }

// mkdirOwned creates dir (and parents) and gives it to o with the given mode.
func (o owner) mkdirOwned(dir string, mode fs.FileMode) error {
	if err := os.MkdirAll(dir, mode); err != nil {
		return err
	}
	if err := os.Chmod(dir, mode); err != nil {
		return err
	}
	if o.switching() {
		return os.Lchown(dir, int(o.uid), int(o.gid))
	}
	return nil
}

// chownTree gives every file under dir to o (after copying a cluster as root).
func (o owner) chownTree(dir string) error {
	if !o.switching() {
		return nil
	}
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(o.uid), int(o.gid))
	})
}

// checkReachable makes sure o can walk down to dir: PostgreSQL opens its data directory by
// path, so every ancestor must be searchable by the server's user.
func (o owner) checkReachable(dir string) error {
	if !o.switching() {
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for p := filepath.Dir(abs); ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if !o.canSearch(st) {
			return fmt.Errorf("PostgreSQL runs as user %q (strata runs as root) and cannot reach %s because %s is not searchable by it; "+
				"choose a --data-dir elsewhere (for example /var/lib/strata) or allow it with `chmod o+x %s`", o.name, abs, p, p)
		}
		if p == "/" || p == filepath.Dir(p) {
			return nil
		}
	}
}

func (o owner) canSearch(st fs.FileInfo) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	mode := st.Mode().Perm()
	switch {
	case sys.Uid == o.uid:
		return mode&0o100 != 0
	case sys.Gid == o.gid:
		return mode&0o010 != 0
	default:
		return mode&0o001 != 0
	}
}

// writableDir fails with a clear message when dir cannot hold Strata's data.
func writableDir(dir string) error {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		mode := fs.FileMode(0o700)
		if os.Geteuid() == 0 {
			mode = 0o711 // searchable, so PostgreSQL's unprivileged user can pass through
		}
		if err := os.MkdirAll(dir, mode); err != nil {
			return fmt.Errorf("data dir %s cannot be created: %w", dir, unwrapPath(err))
		}
		return nil
	case err != nil:
		return fmt.Errorf("data dir %s: %w", dir, unwrapPath(err))
	case !st.IsDir():
		return fmt.Errorf("data dir %s exists and is not a directory", dir)
	}
	f, err := os.CreateTemp(dir, ".write-test-*")
	if err != nil {
		return fmt.Errorf("data dir %s is not writable: %w", dir, unwrapPath(err))
	}
	f.Close()
	return os.Remove(f.Name())
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
