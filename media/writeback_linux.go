package media

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing the file's bytes in [off, off+n) to
// disk without waiting, so that the fsync before the blob is recorded finds most of
// them written already (PostgreSQL's writeback_flush_after does the same). Errors are
// ignored: the fsync that follows is what guarantees durability.
func startWriteback(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
