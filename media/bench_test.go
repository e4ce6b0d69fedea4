package media_test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"testing"

	"github.com/stratadb/strata/media"
)

// BenchmarkUpload measures Upload of distinct 1 MB files through the Go API (no HTTP).
func BenchmarkUpload(b *testing.B) {
	e := setupB(b)
	payload := make([]byte, 1<<20)
	_, _ = rand.Read(payload)
	b.SetBytes(int64(len(payload)))
	i := uint64(0)
	for b.Loop() {
		i++
		binary.BigEndian.PutUint64(payload, i)
		if _, err := e.s.Upload(e.ctx, e.Tenant, media.UploadInput{Body: bytes.NewReader(payload)}); err != nil {
			b.Fatal(err)
		}
	}
}
