package media

import (
	"bufio"
	"bytes"
	"fmt"
	"image"
	_ "image/gif" // register decoders for DecodeConfig
	_ "image/jpeg"
	_ "image/png"
	"io"
	"os"
	"time"

	"github.com/stratadb/strata/problem"
)

// Details are the metadata of a stored blob, extracted once when it is stored.
type Details struct {
	// Width and Height are in pixels; zero for files that are not images.
	Width  int `json:"width"`
	Height int `json:"height"`
	// Frames is the number of frames: 1 for still images, more for animations, 0 for files.
	Frames int `json:"frames"`
	// ContentType is the blob's media type ("image/png").
	ContentType string `json:"content_type"`
	// Format is the short format name ("png", "jpeg", "gif", "file").
	Format string `json:"format"`
	// Size is the blob's length in bytes.
	Size int64 `json:"size"`
	// CreatedAt is when the blob was stored, in UTC.
	CreatedAt time.Time `json:"created_at"`
	// Blurhash is a compact placeholder of an image (blurha.sh), computed once on request
	// (MediaBlurhash) and kept; empty until then and for files.
	Blurhash string `json:"blurhash,omitempty"`
}

// Kinds of uploads that Limits.Kinds can allow.
const (
	// KindImage is a PNG, JPEG or GIF image that Go can decode.
	KindImage = "image"
	// KindFile is any other bytes, kept as application/octet-stream (or the declared type).
	KindFile = "file"
)

// formats maps a decoded format to its content type and alias extension.
var formats = map[string]struct{ contentType, ext string }{
	"png":  {"image/png", "png"},
	"jpeg": {"image/jpeg", "jpg"},
	"gif":  {"image/gif", "gif"},
}

// Limits bound what an upload may be. Zero values mean the defaults.
type Limits struct {
	// MaxBytes bounds an upload's size. Default 40 MiB.
	MaxBytes int64
	// MaxWidth and MaxHeight bound an image's dimensions in pixels. Default 10,000 each.
	MaxWidth, MaxHeight int
	// MaxArea bounds width × height in pixels. Default 40,000,000.
	MaxArea int64
	// MaxFrames bounds an animation's frames. Default 100.
	MaxFrames int
	// Kinds lists the kinds accepted (KindImage, KindFile). Default images only.
	Kinds []string
}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = 40 << 20
	}
	if l.MaxWidth <= 0 {
		l.MaxWidth = 10000
	}
	if l.MaxHeight <= 0 {
		l.MaxHeight = 10000
	}
	if l.MaxArea <= 0 {
		l.MaxArea = 40_000_000
	}
	if l.MaxFrames <= 0 {
		l.MaxFrames = 100
	}
	if len(l.Kinds) == 0 {
		l.Kinds = []string{KindImage}
	}
	return l
}

func (l Limits) allows(kind string) bool {
	for _, k := range l.Kinds {
		if k == kind {
			return true
		}
	}
	return false
}

func rejected(code, format string, args ...any) *problem.Error {
	return problem.Unprocessable(code, format, args...)
}

// inspect extracts the details of the spooled file f (size bytes, declared content type
// as the client sent it, possibly empty) and checks them against the limits, without
// decoding pixels: dimensions come from the header (image.DecodeConfig), GIF frames from
// walking its blocks, and truncation shows as a missing trailer.
func inspect(f *os.File, size int64, declared string, l Limits) (Details, error) {
	d := Details{Size: size}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return d, err
	}
	cfg, format, err := image.DecodeConfig(bufio.NewReader(f))
	if err != nil {
		if isImageType(declared) {
			return d, rejected("content_mismatch", "the content is not a %s image", declared)
		}
		if !l.allows(KindFile) {
			return d, rejected("kind_not_allowed", "only images (PNG, JPEG, GIF) are accepted")
		}
		d.Format, d.ContentType = "file", "application/octet-stream"
		if declared != "" && declared != "application/octet-stream" {
			d.ContentType = declared
		}
		return d, nil
	}
	fm, ok := formats[format]
	if !ok {
		return d, rejected("kind_not_allowed", "images in %s format are not accepted", format)
	}
	if !l.allows(KindImage) {
		return d, rejected("kind_not_allowed", "images are not accepted")
	}
	if isImageType(declared) && declared != fm.contentType {
		return d, rejected("content_mismatch", "the content is %s, not %s", fm.contentType, declared)
	}
	d.Format, d.ContentType, d.Width, d.Height, d.Frames = format, fm.contentType, cfg.Width, cfg.Height, 1
	switch {
	case d.Width <= 0 || d.Height <= 0:
		return d, rejected("invalid_image", "the image has no pixels")
	case d.Width > l.MaxWidth:
		return d, rejected("image_too_wide", "the image is %d pixels wide; at most %d", d.Width, l.MaxWidth)
	case d.Height > l.MaxHeight:
		return d, rejected("image_too_tall", "the image is %d pixels tall; at most %d", d.Height, l.MaxHeight)
	case int64(d.Width)*int64(d.Height) > l.MaxArea:
		return d, rejected("image_too_large", "the image has %d pixels; at most %d", int64(d.Width)*int64(d.Height), l.MaxArea)
	}
	if format == "gif" {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return d, err
		}
		n, err := gifFrames(bufio.NewReader(f), l.MaxFrames)
		if err != nil {
			return d, err
		}
		d.Frames = n
		return d, nil
	}
	if err := checkTrailer(f, size, format); err != nil {
		return d, err
	}
	return d, nil
}

func isImageType(ct string) bool { return len(ct) > 6 && ct[:6] == "image/" }

var errTruncated = rejected("truncated_image", "the image is truncated")

// checkTrailer verifies a PNG ends with its IEND chunk and a JPEG with its EOI marker.
func checkTrailer(f *os.File, size int64, format string) error {
	want := map[string][]byte{
		"png":  {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82},
		"jpeg": {0xFF, 0xD9},
	}[format]
	if int64(len(want)) > size {
		return errTruncated
	}
	tail := make([]byte, len(want))
	if _, err := f.ReadAt(tail, size-int64(len(want))); err != nil {
		return fmt.Errorf("reading the upload's trailer: %w", err)
	}
	if !bytes.Equal(tail, want) {
		return errTruncated
	}
	return nil
}

// gifFrames counts a GIF's image descriptors by walking its blocks (no decoding),
// failing once there are more than maxFrames or the stream ends before the trailer.
func gifFrames(r *bufio.Reader, maxFrames int) (int, error) {
	hdr := make([]byte, 13)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return 0, errTruncated
	}
	if hdr[10]&0x80 != 0 { // global color table
		if _, err := r.Discard(3 << (hdr[10]&7 + 1)); err != nil {
			return 0, errTruncated
		}
	}
	frames := 0
	for {
		b, err := r.ReadByte()
		if err != nil {
			return 0, errTruncated
		}
		switch b {
		case 0x3B: // trailer
			if frames == 0 {
				return 0, rejected("invalid_image", "the GIF has no frames")
			}
			return frames, nil
		case 0x21: // extension: label, then sub-blocks
			if _, err := r.ReadByte(); err != nil {
				return 0, errTruncated
			}
		case 0x2C: // image descriptor
			frames++
			if frames > maxFrames {
				return 0, rejected("too_many_frames", "the animation has more than %d frames", maxFrames)
			}
			desc := make([]byte, 9)
			if _, err := io.ReadFull(r, desc); err != nil {
				return 0, errTruncated
			}
			if desc[8]&0x80 != 0 { // local color table
				if _, err := r.Discard(3 << (desc[8]&7 + 1)); err != nil {
					return 0, errTruncated
				}
			}
			if _, err := r.ReadByte(); err != nil { // LZW minimum code size
				return 0, errTruncated
			}
		default:
			return 0, rejected("invalid_image", "the GIF is malformed")
		}
		if err := skipSubBlocks(r); err != nil {
			return 0, err
		}
	}
}

func skipSubBlocks(r *bufio.Reader) error {
	for {
		n, err := r.ReadByte()
		if err != nil {
			return errTruncated
		}
		if n == 0 {
			return nil
		}
		if _, err := r.Discard(int(n)); err != nil {
			return errTruncated
		}
	}
}
