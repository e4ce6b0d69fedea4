package media

import (
	"fmt"
	"image"
	"image/color"
	"image/color/palette"
	"image/draw"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"strconv"
	"strings"

	"github.com/stratadb/strata/problem"
)

// A variant spec is a list of operations separated by "/", applied in order:
//
//	thumbnail=N        fit within N×N pixels, never enlarging
//	resize=fit:WxH     scale to fit within W×H, keeping the aspect ratio
//	resize=fill:WxH    scale to cover W×H, then crop the centre to exactly W×H
//	crop=X,Y,W,H       keep the W×H rectangle at X,Y (clipped to the image)
//	blur=R             box blur of radius R (1 to 50) pixels, three passes
//	format=F           encode as png, jpeg or gif (default: the original's format)
//
// For example "thumbnail=256/format=jpeg". An animated GIF stays animated when the
// variant is a GIF too (every frame is composed as a viewer shows it, processed and
// re-quantized to its own palette, with its delay and the loop count kept); converted to
// PNG or JPEG, or over 100 million pixels in all its frames, it gives a still of its first
// frame. Sizes are 1 to 10,000 pixels.
type op struct {
	name       string
	w, h, x, y int
	mode       string
}

const maxSpecOps = 10

func invalidSpec(format string, args ...any) *problem.Error {
	return problem.Unprocessable("invalid_spec", format, args...).WithField("path.spec", "invalid")
}

// ParseSpec validates a variant spec and answers its canonical form (the key variants
// are stored under).
func ParseSpec(spec string) (string, error) {
	ops, format, err := parseSpec(spec)
	if err != nil {
		return "", err
	}
	return canonical(ops, format), nil
}

func parseSpec(spec string) ([]op, string, error) {
	if spec == "" || len(spec) > 500 {
		return nil, "", invalidSpec("a spec is 1 to 500 characters")
	}
	parts := strings.Split(spec, "/")
	if len(parts) > maxSpecOps {
		return nil, "", invalidSpec("a spec has at most %d operations", maxSpecOps)
	}
	var ops []op
	format := ""
	for _, p := range parts {
		name, arg, ok := strings.Cut(p, "=")
		if !ok {
			return nil, "", invalidSpec("operation %q has no value (name=value)", p)
		}
		o := op{name: name}
		var err error
		switch name {
		case "thumbnail":
			o.w, err = dim(arg)
			o.h = o.w
		case "resize":
			mode, size, ok := strings.Cut(arg, ":")
			if !ok || (mode != "fit" && mode != "fill") {
				return nil, "", invalidSpec("resize is fit:WxH or fill:WxH")
			}
			o.mode = mode
			o.w, o.h, err = dims(size)
		case "crop":
			f := strings.Split(arg, ",")
			if len(f) != 4 {
				return nil, "", invalidSpec("crop is X,Y,W,H")
			}
			if o.x, err = coord(f[0]); err == nil {
				if o.y, err = coord(f[1]); err == nil {
					if o.w, err = dim(f[2]); err == nil {
						o.h, err = dim(f[3])
					}
				}
			}
		case "blur":
			o.w, err = strconv.Atoi(arg)
			if err == nil && (o.w < 1 || o.w > 50) {
				err = fmt.Errorf("out of range")
			}
		case "format":
			if _, ok := formats[arg]; !ok {
				return nil, "", invalidSpec("format is png, jpeg or gif")
			}
			format = arg
			continue
		default:
			return nil, "", invalidSpec("unknown operation %q", name)
		}
		if err != nil {
			return nil, "", invalidSpec("operation %q has an invalid value", p)
		}
		ops = append(ops, o)
	}
	return ops, format, nil
}

func coord(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 100000 {
		return 0, fmt.Errorf("bad coordinate")
	}
	return n, nil
}

func dim(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 10000 {
		return 0, fmt.Errorf("bad size")
	}
	return n, nil
}

func dims(s string) (int, int, error) {
	a, b, ok := strings.Cut(s, "x")
	if !ok {
		return 0, 0, fmt.Errorf("bad size")
	}
	w, err := dim(a)
	if err != nil {
		return 0, 0, err
	}
	h, err := dim(b)
	return w, h, err
}

func canonical(ops []op, format string) string {
	var parts []string
	for _, o := range ops {
		switch o.name {
		case "thumbnail":
			parts = append(parts, fmt.Sprintf("thumbnail=%d", o.w))
		case "resize":
			parts = append(parts, fmt.Sprintf("resize=%s:%dx%d", o.mode, o.w, o.h))
		case "crop":
			parts = append(parts, fmt.Sprintf("crop=%d,%d,%d,%d", o.x, o.y, o.w, o.h))
		case "blur":
			parts = append(parts, fmt.Sprintf("blur=%d", o.w))
		}
	}
	if format != "" {
		parts = append(parts, "format="+format)
	}
	return strings.Join(parts, "/")
}

// outputSize is the size a spec's operations give an image of w×h, computed without
// touching pixels (the same arithmetic as apply).
func outputSize(ops []op, w, h int) (int, int) {
	for _, o := range ops {
		switch o.name {
		case "thumbnail":
			if w > o.w || h > o.h {
				w, h = fitSize(w, h, o.w, o.h)
			}
		case "resize":
			if o.mode == "fit" {
				w, h = fitSize(w, h, o.w, o.h)
			} else {
				w, h = o.w, o.h
			}
		case "crop":
			r := image.Rect(o.x, o.y, o.x+o.w, o.y+o.h).Intersect(image.Rect(0, 0, w, h))
			if !r.Empty() {
				w, h = r.Dx(), r.Dy()
			}
		}
	}
	return w, h
}

func fitSize(w, h, bw, bh int) (int, int) {
	scale := min(float64(bw)/float64(w), float64(bh)/float64(h))
	return max(1, int(float64(w)*scale+0.5)), max(1, int(float64(h)*scale+0.5))
}

// checkOutput refuses a spec whose result would be larger than maxArea pixels (an
// enlargement of a small image can ask for 10,000 × 10,000).
func checkOutput(spec string, w, h int, maxArea int64) error {
	ops, _, err := parseSpec(spec)
	if err != nil {
		return err
	}
	ow, oh := outputSize(ops, w, h)
	if int64(ow)*int64(oh) > maxArea {
		return problem.Unprocessable("variant_too_large", "the variant would have %d×%d pixels; at most %d in all", ow, oh, maxArea).
			WithField("path.spec", "too large")
	}
	return nil
}

// maxAnimatedPixels bounds the pixels of all frames of a GIF made into an animated
// variant, its frames and the variant's frames together (decoded and kept at a byte
// each): about 100 MB. Past it the variant is a still.
const maxAnimatedPixels = 100_000_000

// animatable reports whether a GIF of frames frames of w×h pixels can become an
// animated variant by spec: its frames and the variant's, kept together, stay within
// maxAnimatedPixels.
func animatable(spec string, frames, w, h int) bool {
	ops, _, err := parseSpec(spec)
	return err == nil && frames > 1 && animationPixels(ops, frames, w, h) <= maxAnimatedPixels
}

// animationPixels counts the pixels an animated variant holds at once: every frame of
// the original (decoded together) and of the variant (kept until encoded).
func animationPixels(ops []op, frames, w, h int) int64 {
	ow, oh := outputSize(ops, w, h)
	return int64(frames) * (int64(w)*int64(h) + int64(ow)*int64(oh))
}

func hasTransparent(pal color.Palette) bool {
	for _, c := range pal {
		if _, _, _, a := c.RGBA(); a == 0 {
			return true
		}
	}
	return false
}

// process decodes src, applies the spec and encodes the result to dst in the spec's
// format (or origFormat), answering the output's format, size and frames. animate makes
// a GIF into a GIF of all its frames; otherwise the first frame is used.
func process(src io.Reader, origFormat, spec string, dst io.Writer, animate bool) (string, image.Point, int, error) {
	ops, format, err := parseSpec(spec)
	if err != nil {
		return "", image.Point{}, 0, err
	}
	if format == "" {
		format = origFormat
	}
	if animate && origFormat == "gif" && format == "gif" {
		size, frames, err := processGIF(src, ops, dst)
		return format, size, frames, err
	}
	img, _, err := image.Decode(src)
	if err != nil {
		return "", image.Point{}, 0, fmt.Errorf("decoding the original: %w", err)
	}
	m := toRGBA(img)
	for _, o := range ops {
		m = apply(m, o)
	}
	switch format {
	case "jpeg":
		err = jpeg.Encode(dst, m, &jpeg.Options{Quality: 85})
	case "gif":
		err = gif.Encode(dst, m, nil)
	default:
		format = "png"
		err = (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(dst, m)
	}
	return format, m.Bounds().Size(), 1, err
}

// processGIF applies ops to every frame of a GIF, as a viewer composes it (frames drawn
// over the canvas, then disposed of as each asks), and encodes the results as an
// animation of whole frames with the original delays and loop count. One canvas is kept
// in memory, and the processed frames as palette images.
func processGIF(src io.Reader, ops []op, dst io.Writer) (image.Point, int, error) {
	g, err := gif.DecodeAll(src)
	if err != nil {
		return image.Point{}, 0, fmt.Errorf("decoding the original: %w", err)
	}
	screen := image.Rect(0, 0, g.Config.Width, g.Config.Height)
	for _, fr := range g.Image {
		screen = screen.Union(fr.Bounds())
	}
	if animationPixels(ops, len(g.Image), screen.Dx(), screen.Dy()) > maxAnimatedPixels {
		// The caller checked the declared size (animatable); frames may reach past it.
		return image.Point{}, 0, fmt.Errorf("the animation's frames reach past its declared size")
	}
	// One palette for every frame: the original's global one (or Plan 9's), with a
	// transparent entry so that cleared areas stay clear.
	var pal color.Palette
	if gp, ok := g.Config.ColorModel.(color.Palette); ok && len(gp) > 0 {
		pal = append(pal, gp...)
	} else {
		pal = append(pal, palette.Plan9...)
	}
	if !hasTransparent(pal) {
		if len(pal) == 256 {
			pal = pal[:255]
		}
		pal = append(pal, color.Transparent)
	}
	canvas := image.NewRGBA(screen)
	out := &gif.GIF{LoopCount: g.LoopCount}
	var size image.Point
	for i, fr := range g.Image {
		disposal := byte(0)
		if i < len(g.Disposal) {
			disposal = g.Disposal[i]
		}
		var previous *image.RGBA
		if disposal == gif.DisposalPrevious {
			previous = toRGBA(canvas)
		}
		draw.Draw(canvas, fr.Bounds(), fr, fr.Bounds().Min, draw.Over)
		m := toRGBA(canvas) // a copy: the ops may answer their input
		for _, o := range ops {
			m = apply(m, o)
		}
		p := image.NewPaletted(m.Bounds(), pal)
		draw.FloydSteinberg.Draw(p, p.Bounds(), m, m.Bounds().Min)
		delay := 0
		if i < len(g.Delay) {
			delay = g.Delay[i]
		}
		out.Image = append(out.Image, p)
		out.Delay = append(out.Delay, delay)
		// Whole frames, each cleared before the next: a transparent pixel shows the
		// background, never the frame before.
		out.Disposal = append(out.Disposal, gif.DisposalBackground)
		size = m.Bounds().Size()
		switch disposal {
		case gif.DisposalBackground:
			draw.Draw(canvas, fr.Bounds(), image.Transparent, image.Point{}, draw.Src)
		case gif.DisposalPrevious:
			draw.Draw(canvas, canvas.Bounds(), previous, image.Point{}, draw.Src)
		}
	}
	if len(out.Image) == 0 {
		return image.Point{}, 0, fmt.Errorf("decoding the original: a GIF without frames")
	}
	return size, len(out.Image), gif.EncodeAll(dst, out)
}

func toRGBA(img image.Image) *image.RGBA {
	b := img.Bounds()
	m := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(m, m.Bounds(), img, b.Min, draw.Src)
	return m
}

func apply(m *image.RGBA, o op) *image.RGBA {
	w, h := m.Bounds().Dx(), m.Bounds().Dy()
	switch o.name {
	case "thumbnail":
		if w <= o.w && h <= o.h {
			return m
		}
		return fit(m, o.w, o.h)
	case "resize":
		if o.mode == "fit" {
			return fit(m, o.w, o.h)
		}
		scale := max(float64(o.w)/float64(w), float64(o.h)/float64(h))
		sw, sh := max(o.w, int(float64(w)*scale+0.5)), max(o.h, int(float64(h)*scale+0.5))
		s := scaleTo(m, sw, sh)
		x, y := (sw-o.w)/2, (sh-o.h)/2
		return toRGBA(s.SubImage(image.Rect(x, y, x+o.w, y+o.h)))
	case "crop":
		r := image.Rect(o.x, o.y, o.x+o.w, o.y+o.h).Intersect(m.Bounds())
		if r.Empty() {
			return m
		}
		return toRGBA(m.SubImage(r))
	case "blur":
		for range 3 {
			m = boxBlur(m, o.w)
		}
		return m
	}
	return m
}

func fit(m *image.RGBA, bw, bh int) *image.RGBA {
	w, h := fitSize(m.Bounds().Dx(), m.Bounds().Dy(), bw, bh)
	return scaleTo(m, w, h)
}

// scaleTo resamples with a box filter when shrinking (each output pixel averages the
// source pixels it covers) and nearest-neighbour sampling when enlarging.
func scaleTo(src *image.RGBA, dw, dh int) *image.RGBA {
	sw, sh := src.Bounds().Dx(), src.Bounds().Dy()
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	for y := range dh {
		y0, y1 := y*sh/dh, max((y+1)*sh/dh, y*sh/dh+1)
		for x := range dw {
			x0, x1 := x*sw/dw, max((x+1)*sw/dw, x*sw/dw+1)
			var r, g, b, a, n int
			for sy := y0; sy < y1; sy++ {
				i := src.PixOffset(x0, sy)
				for sx := x0; sx < x1; sx++ {
					r += int(src.Pix[i])
					g += int(src.Pix[i+1])
					b += int(src.Pix[i+2])
					a += int(src.Pix[i+3])
					i += 4
					n++
				}
			}
			dst.SetRGBA(x, y, color.RGBA{uint8(r / n), uint8(g / n), uint8(b / n), uint8(a / n)}) //nolint:gosec // averages of bytes
		}
	}
	return dst
}

// boxBlur blurs horizontally then vertically with a running sum of radius r.
func boxBlur(src *image.RGBA, r int) *image.RGBA {
	return blurPass(blurPass(src, r, true), r, false)
}

func blurPass(src *image.RGBA, r int, horizontal bool) *image.RGBA {
	w, h := src.Bounds().Dx(), src.Bounds().Dy()
	dst := image.NewRGBA(src.Bounds())
	lines, length := h, w
	if !horizontal {
		lines, length = w, h
	}
	at := func(line, i int) int {
		if horizontal {
			return src.PixOffset(i, line)
		}
		return src.PixOffset(line, i)
	}
	for line := range lines {
		var sum [4]int
		n := 0
		for i := -r; i <= r; i++ {
			if i >= 0 && i < length {
				o := at(line, i)
				for c := range 4 {
					sum[c] += int(src.Pix[o+c])
				}
				n++
			}
		}
		for i := range length {
			o := at(line, i)
			for c := range 4 {
				dst.Pix[o+c] = uint8(sum[c] / n) //nolint:gosec // an average of bytes
			}
			if out := i - r; out >= 0 {
				p := at(line, out)
				for c := range 4 {
					sum[c] -= int(src.Pix[p+c])
				}
				n--
			}
			if in := i + r + 1; in < length {
				p := at(line, in)
				for c := range 4 {
					sum[c] += int(src.Pix[p+c])
				}
				n++
			}
		}
	}
	return dst
}
