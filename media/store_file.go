package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// FileStore keeps blobs as files under a root directory. Writes go to a temporary file
// in the root's .tmp directory, are fsynced and renamed into place, and the directory is
// fsynced: a blob is either absent or complete, also after a crash.
type FileStore struct {
	root string
	// synced holds the directories this process knows to be durable in their parents.
	synced sync.Map
}

// tmpDir is the store's spool directory, on the same file system as the blobs so a
// spooled upload is moved in with a rename.
const tmpDir = ".tmp"

// NewFileStore returns a file store rooted at dir. The directory is created on the first
// write, so a platform that never stores media leaves no trace.
func NewFileStore(dir string) (*FileStore, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("media file store %q: %w", dir, err)
	}
	return &FileStore{root: abs}, nil
}

// Name is "file".
func (s *FileStore) Name() string { return "file" }

// TempDir is where the Service spools uploads for this store: inside the root, so a
// finished upload is moved into place without copying.
func (s *FileStore) TempDir() string { return filepath.Join(s.root, tmpDir) }

// path maps an identifier to its file, refusing anything that could leave the root.
func (s *FileStore) path(id string) (string, error) {
	if id == "" || strings.HasPrefix(id, "/") || strings.Contains(id, "\\") || path.Clean(id) != id ||
		strings.HasPrefix(id, "..") || strings.HasPrefix(id, tmpDir) {
		return "", fmt.Errorf("media file store: invalid identifier %q", id)
	}
	return filepath.Join(s.root, filepath.FromSlash(id)), nil
}

// Put moves (or, across file systems, copies) the file at src to id, durably.
func (s *FileStore) Put(ctx context.Context, id, src string) error {
	dst, err := s.path(id)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.mkdirAllSynced(filepath.Dir(dst)); err != nil {
		return fmt.Errorf("storing %s: %w", id, err)
	}
	if err := syncFile(src); err != nil {
		return fmt.Errorf("storing %s: %w", id, err)
	}
	err = os.Rename(src, dst)
	if errors.Is(err, syscall.EXDEV) {
		err = s.copyIn(src, dst)
	}
	if err != nil {
		return fmt.Errorf("storing %s: %w", id, err)
	}
	return syncDir(filepath.Dir(dst))
}

// copyIn copies src into the spool directory, fsyncs it and renames it to dst.
func (s *FileStore) copyIn(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(s.TempDir(), 0o750); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.TempDir(), "put-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err = io.Copy(tmp, in); err != nil {
		_ = tmp.Close()
		return err
	}
	if err = tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

// mkdirAllSynced is os.MkdirAll that also fsyncs the parent of every directory on the
// way, once per process: of those it creates, and of those it finds (another Put may have
// created one a moment ago without having synced it yet), so a blob's directory survives
// a crash as surely as the blob's own entry.
func (s *FileStore) mkdirAllSynced(dir string) error {
	if _, ok := s.synced.Load(dir); ok {
		return nil
	}
	st, err := os.Stat(dir)
	switch {
	case err == nil && !st.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return err
	}
	parent := filepath.Dir(dir)
	if parent == dir {
		return nil // the file system's root
	}
	if err := s.mkdirAllSynced(parent); err != nil {
		return err
	}
	if err != nil { // missing
		if err := os.Mkdir(dir, 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	if err := syncDir(parent); err != nil {
		return err
	}
	s.synced.Store(dir, struct{}{})
	return nil
}

func syncFile(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

// Open opens the blob's file.
func (s *FileStore) Open(_ context.Context, id string) (Blob, error) {
	p, err := s.path(id)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrBlobNotFound
	}
	return f, err
}

// Stat answers the blob's size.
func (s *FileStore) Stat(_ context.Context, id string) (int64, error) {
	p, err := s.path(id)
	if err != nil {
		return 0, err
	}
	st, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, ErrBlobNotFound
	}
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// Delete removes the blob's file.
func (s *FileStore) Delete(_ context.Context, id string) error {
	p, err := s.path(id)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("deleting %s: %w", id, err)
	}
	return nil
}

// List walks the root, skipping the spool directory.
func (s *FileStore) List(ctx context.Context, fn func(id string, modified time.Time) error) error {
	return filepath.WalkDir(s.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, rerr := filepath.Rel(s.root, p)
		if rerr != nil {
			return rerr
		}
		if d.IsDir() {
			if rel == tmpDir {
				return filepath.SkipDir
			}
			return nil
		}
		info, ierr := d.Info()
		if errors.Is(ierr, fs.ErrNotExist) {
			return nil
		}
		if ierr != nil {
			return ierr
		}
		return fn(filepath.ToSlash(rel), info.ModTime())
	})
}
