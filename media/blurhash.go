package media

import (
	"context"
	"encoding/hex"
	"fmt"
	"image"

	"github.com/buckket/go-blurhash"
	"github.com/stratadb/strata/internal/db"
)

// MediaBlurhash answers an alias's details with their blurhash (read on
// "media:<alias>"), computing it from a 32-pixel-wide reduction of the image the first
// time and keeping it with the details. Files that are not images have none.
func (s *Service) MediaBlurhash(ctx context.Context, tenant, alias string) (Media, error) {
	m, err := s.MediaGet(ctx, tenant, alias)
	if err != nil || m.Details.Blurhash != "" || m.Details.Width == 0 {
		return m, err
	}
	b, err := s.open(ctx, m)
	if err != nil {
		return Media{}, err
	}
	defer b.Close()
	img, _, err := image.Decode(b)
	if err != nil {
		return Media{}, fmt.Errorf("decoding %s for its blurhash: %w", alias, err)
	}
	small := fit(toRGBA(img), 32, 32)
	h, err := blurhash.Encode(4, 3, small)
	if err != nil {
		return Media{}, fmt.Errorf("blurhash of %s: %w", alias, err)
	}
	sum, _ := hex.DecodeString(m.Hash)
	if _, err := s.pool.Exec(ctx, `UPDATE media_details SET details = jsonb_set(details, '{blurhash}', to_jsonb($3::text))
		WHERE tenant_id = $1 AND hash = $2`, tenant, sum, h); err != nil {
		return Media{}, db.Translate(err, "details")
	}
	m.Details.Blurhash = h
	return m, nil
}
