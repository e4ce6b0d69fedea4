package media

import "testing"

// An animation stays animated only while its frames and the variant's fit the budget
// together; an enlargement counts at its output size.
func TestAnimatable(t *testing.T) {
	t.Parallel()
	cases := []struct {
		spec         string
		frames, w, h int
		want         bool
		pixels       int64 // what animationPixels counts; -1 for a bad spec
	}{
		{"thumbnail=100", 1, 400, 400, false, 170_000}, // a still is never animated
		{"thumbnail=100", 100, 400, 400, true, 17_000_000},
		{"thumbnail=100", 100, 1000, 1000, false, 101_000_000}, // the originals' frames alone are too many
		{"resize=fit:4000x4000", 5, 100, 100, true, 80_050_000},
		{"resize=fit:4000x4000", 10, 100, 100, false, 160_100_000}, // the variant's frames are
		{"crop=0,0,10,10", 100, 1000, 900, true, 90_010_000},
		{"crop=0,0,10,10", 100, 1000, 1000, false, 100_010_000},
		{"nonsense", 10, 10, 10, false, -1},
	}
	for _, c := range cases {
		if got := animatable(c.spec, c.frames, c.w, c.h); got != c.want {
			t.Errorf("%s on %d×%d×%d: animatable %v, want %v", c.spec, c.frames, c.w, c.h, got, c.want)
		}
		ops, _, err := parseSpec(c.spec)
		if err != nil {
			continue
		}
		if n := animationPixels(ops, c.frames, c.w, c.h); n != c.pixels {
			t.Errorf("%s on %d×%d×%d: %d pixels, want %d", c.spec, c.frames, c.w, c.h, n, c.pixels)
		}
	}
}
