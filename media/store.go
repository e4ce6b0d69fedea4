package media

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrBlobNotFound is returned by a Store for an identifier it does not hold.
var ErrBlobNotFound = errors.New("media: blob not found")

// Blob is an open stored blob: readable, seekable (for ranges) and closable.
type Blob interface {
	io.ReadSeekCloser
}

// Store keeps blobs under identifiers (relative slash-separated paths that the Service
// chooses, unique per write). Implementations must make Put atomic — a reader never sees
// a partly written blob — and durable before it returns, because the Service commits the
// rows that name the blob as soon as it returns.
type Store interface {
	// Name names the store in logs and errors ("file", "s3").
	Name() string
	// Put stores the complete file at path under id, atomically and durably. The store may
	// move the file instead of copying it; the caller removes path afterwards if it is
	// still there.
	Put(ctx context.Context, id, path string) error
	// Open opens a blob for reading; ErrBlobNotFound when it is missing.
	Open(ctx context.Context, id string) (Blob, error)
	// Stat answers a blob's size in bytes; ErrBlobNotFound when it is missing.
	Stat(ctx context.Context, id string) (int64, error)
	// Delete removes a blob; a missing blob is not an error.
	Delete(ctx context.Context, id string) error
	// List calls fn for every blob with its last modification time, in no particular
	// order, stopping at fn's first error.
	List(ctx context.Context, fn func(id string, modified time.Time) error) error
}
