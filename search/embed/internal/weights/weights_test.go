package weights

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stratadb/strata/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func TestHalfRoundTripsEveryValue(t *testing.T) {
	t.Parallel()
	for h := range 1 << 16 {
		v := FromHalf(uint16(h))
		got := ToHalf(v)
		if v != v { // NaN: any NaN will do, keeping the sign
			if got&0x7c00 != 0x7c00 || got&0x3ff == 0 || got&0x8000 != uint16(h)&0x8000 {
				t.Fatalf("NaN %#04x came back as %#04x", h, got)
			}
			continue
		}
		if got != uint16(h) {
			t.Fatalf("%#04x → %v → %#04x", h, v, got)
		}
	}
}

// TestHalfRoundsToNearest compares ToHalf with a brute-force nearest search (ties to even)
// over random float32 values across the half range, its edges and beyond.
func TestHalfRoundsToNearest(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	nearest := func(v float32) uint16 {
		if math.Abs(float64(v)) >= 65520 { // halfway to the next power of two: Inf
			return uint16(math.Float32bits(v)>>16)&0x8000 | 0x7c00
		}
		best, bestErr := uint16(0), math.Inf(1)
		for h := range 1 << 16 {
			f := FromHalf(uint16(h))
			if f != f || math.IsInf(float64(f), 0) || math.Signbit(float64(f)) != math.Signbit(float64(v)) {
				continue
			}
			err := math.Abs(float64(f) - float64(v))
			if err < bestErr || (err == bestErr && h&1 == 0) {
				best, bestErr = uint16(h), err
			}
		}
		return best
	}
	for i := range 1000 {
		// Exponents from well below the subnormals to above the largest half.
		v := float32(math.Ldexp(r.Float64()+1, r.IntN(46)-30))
		if i%2 == 1 {
			v = -v
		}
		if i%5 == 0 { // values that are halves already
			v = FromHalf(uint16(r.IntN(0x7c00)))
		}
		if got, want := ToHalf(v), nearest(v); got != want {
			t.Fatalf("ToHalf(%g) = %#04x (%g), want %#04x (%g)", v, got, FromHalf(got), want, FromHalf(want))
		}
	}
	// Ties: the midpoint between consecutive halves rounds to the even one.
	for h := uint16(0); h < 0x7bff; h += 7 {
		mid := (float64(FromHalf(h)) + float64(FromHalf(h+1))) / 2
		want := h
		if h&1 == 1 {
			want = h + 1
		}
		if got := ToHalf(float32(mid)); got != want {
			t.Fatalf("tie between %#04x and %#04x rounded to %#04x", h, h+1, got)
		}
	}
}

func TestWriteRead(t *testing.T) {
	t.Parallel()
	meta := map[string]any{"model": "test", "n": 3}
	in := []Tensor{
		{Name: "a", Shape: []int{2, 3}, Data: []float32{1, -2, 3.5, 0, 1e-3, 65504}},
		{Name: "b", Shape: []int{3}, Data: []float32{0.1, 0.2, 0.3}, DType: F16},
		{Name: "scalar", Shape: []int{}, Data: []float32{42}},
	}
	var buf bytes.Buffer
	if err := Write(&buf, meta, in); err != nil {
		t.Fatal(err)
	}
	f, err := Read(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Model string `json:"model"`
		N     int    `json:"n"`
	}
	if err := f.Meta(&m); err != nil || m.Model != "test" || m.N != 3 {
		t.Fatalf("meta = %+v, %v", m, err)
	}
	for _, want := range in {
		got, err := f.Float32(want.Name, want.Shape...)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want.Data {
			w := want.Data[i]
			if want.DType == F16 {
				w = FromHalf(ToHalf(w))
			}
			if got[i] != w {
				t.Fatalf("%s[%d] = %v, want %v", want.Name, i, got[i], w)
			}
		}
	}
	if _, err := f.Float32("a", 3, 2); err == nil {
		t.Error("a wrong shape was accepted")
	}
	if _, err := f.Float32("missing"); err == nil {
		t.Error("a missing tensor was returned")
	}
	// Every truncation of the file is rejected rather than read out of bounds.
	for n := range buf.Len() {
		if _, err := Read(buf.Bytes()[:n]); err == nil {
			t.Fatalf("a file truncated to %d of %d bytes was accepted", n, buf.Len())
		}
	}
}

func TestWriteRejectsBadShapes(t *testing.T) {
	t.Parallel()
	if err := Write(&bytes.Buffer{}, nil, []Tensor{{Name: "x", Shape: []int{2}, Data: []float32{1}}}); err == nil {
		t.Error("a tensor whose shape does not match its data was written")
	}
}

// FuzzRead checks that no input makes Read or Float32 panic or read out of bounds.
func FuzzRead(f *testing.F) {
	var buf bytes.Buffer
	_ = Write(&buf, map[string]int{"x": 1}, []Tensor{
		{Name: "a", Shape: []int{2, 2}, Data: []float32{1, 2, 3, 4}},
		{Name: "h", Shape: []int{2}, Data: []float32{1, 2}, DType: F16},
	})
	f.Add(buf.Bytes())
	f.Add([]byte(Magic + "\x02\x00\x00\x00{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := Read(b)
		if err != nil {
			return
		}
		for name, e := range file.tensors {
			_, _ = file.Float32(name, e.Shape...)
		}
	})
}
