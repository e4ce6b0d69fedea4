package embedpg

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Binaries is a directory holding a PostgreSQL server's programs, and their version.
type Binaries struct {
	// Dir holds postgres and initdb.
	Dir string
	// Major is the major version (15 for 15.18).
	Major int
	// Version is the full version string reported by postgres --version.
	Version string
}

// Path returns the full path of the named program in b.
func (b Binaries) Path(name string) string { return filepath.Join(b.Dir, name) }

// errNoBinaries explains how to get PostgreSQL when none was found.
var errNoBinaries = errors.New("PostgreSQL server binaries (postgres, initdb) not found; looked at $STRATA_PG_BIN, " +
	"`pg_config --bindir`, /usr/lib/postgresql/*/bin and PATH. Install PostgreSQL 14 or newer " +
	"(Debian/Ubuntu: `apt-get install postgresql`; Fedora: `dnf install postgresql-server`; " +
	"macOS: `brew install postgresql@16`), point --pg-bin (STRATA_PG_BIN) at its bin directory, " +
	"or use an external database with --database-url (STRATA_DATABASE_URL)")

// libRoot is where Debian and Ubuntu install each PostgreSQL major version.
var libRoot = "/usr/lib/postgresql"

// FindBinaries locates the server programs. An explicit dir is used as given (an error if
// it lacks them). Otherwise it tries `pg_config --bindir`, the newest
// /usr/lib/postgresql/*/bin, then PATH. When wantMajor is set (the version an existing data
// directory was made by) a matching installation is preferred, and a mismatch is an error.
func FindBinaries(explicit string, wantMajor int) (Binaries, error) {
	if explicit != "" {
		b, err := probe(explicit)
		if err != nil {
			return Binaries{}, fmt.Errorf("--pg-bin (STRATA_PG_BIN) %s: %w", explicit, err)
		}
		return b, checkMajor(b, wantMajor)
	}
	var found []Binaries
	for _, dir := range candidateDirs() {
		if b, err := probe(dir); err == nil {
			found = append(found, b)
		}
	}
	if len(found) == 0 {
		return Binaries{}, errNoBinaries
	}
	if wantMajor > 0 {
		for _, b := range found {
			if b.Major == wantMajor {
				return b, nil
			}
		}
	}
	return found[0], checkMajor(found[0], wantMajor)
}

func checkMajor(b Binaries, want int) error {
	if want == 0 || b.Major == want {
		return nil
	}
	return fmt.Errorf("the data directory was created by PostgreSQL %d but the binaries in %s are PostgreSQL %d: "+
		"install PostgreSQL %d and point --pg-bin at it, or upgrade the data directory with pg_upgrade",
		want, b.Dir, b.Major, want)
}

// candidateDirs lists where to look, in order of preference, without duplicates.
func candidateDirs() []string {
	var dirs []string
	if out, err := output("pg_config", "--bindir"); err == nil {
		dirs = append(dirs, strings.TrimSpace(string(out)))
	}
	dirs = append(dirs, versionedDirs()...)
	if p, err := exec.LookPath("postgres"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dirs = append(dirs, filepath.Dir(p))
	}
	seen := map[string]bool{}
	out := dirs[:0]
	for _, d := range dirs {
		if d != "" && !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

// versionedDirs returns /usr/lib/postgresql/<major>/bin, newest first.
func versionedDirs() []string {
	entries, err := os.ReadDir(libRoot)
	if err != nil {
		return nil
	}
	var majors []int
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			majors = append(majors, n)
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(majors)))
	dirs := make([]string, len(majors))
	for i, m := range majors {
		dirs[i] = filepath.Join(libRoot, strconv.Itoa(m), "bin")
	}
	return dirs
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\) (\d+)(\.\d+)?`)

// probe checks that dir has postgres and initdb and asks postgres for its version.
func probe(dir string) (Binaries, error) {
	for _, name := range []string{"postgres", "initdb"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return Binaries{}, fmt.Errorf("no %s program there", name)
		}
		if st.Mode()&0o111 == 0 {
			return Binaries{}, fmt.Errorf("%s there is not executable", name)
		}
	}
	out, err := output(filepath.Join(dir, "postgres"), "--version")
	if err != nil {
		return Binaries{}, fmt.Errorf("running postgres --version: %w", err)
	}
	m := versionRE.FindStringSubmatch(string(out))
	if m == nil {
		return Binaries{}, fmt.Errorf("cannot read the version from %q", strings.TrimSpace(string(out)))
	}
	major, _ := strconv.Atoi(m[1])
	if major < 14 {
		return Binaries{}, fmt.Errorf("PostgreSQL %d is too old; Strata needs 14 or newer", major)
	}
	return Binaries{Dir: dir, Major: major, Version: strings.TrimSpace(string(out))}, nil
}

// dataDirMajor reads PG_VERSION of an initialized data directory, or 0 if there is none.
func dataDirMajor(pgdata string) (int, error) {
	b, err := os.ReadFile(filepath.Join(pgdata, "PG_VERSION"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s/PG_VERSION is unreadable: %q", pgdata, b)
	}
	return n, nil
}

// output runs a short informational program and returns its standard output, bounded so a
// wedged one cannot hang startup.
func output(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, name, args...).Output()
}
