package weights

import "math"

// ToHalf rounds v to the nearest IEEE 754 binary16 value (ties to even) and returns its
// bits. Values beyond the half range become ±Inf; NaN stays NaN.
func ToHalf(v float32) uint16 {
	b := math.Float32bits(v)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	man := b & 0x7fffff
	switch {
	case exp == 0xff: // Inf or NaN
		if man != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp > 127+15: // ≥ 2^16: beyond the largest half even before rounding
		return sign | 0x7c00
	case exp < 127-25: // < 2^-25, half the smallest subnormal: rounds to zero
		return sign
	}
	var half, shift uint32
	if e := exp - 127 + 15; e > 0 { // normal half: keep 10 of the 23 fraction bits
		half, shift = uint32(e)<<10|man>>13, 13
	} else { // subnormal half: the implicit bit becomes explicit and more bits go
		shift = uint32(14 - e)
		man |= 0x800000
		half = man >> shift
	}
	// Round the dropped bits to nearest, ties to even. A carry out of the fraction moves into
	// the exponent, which is the correctly rounded result (up to Inf at 0x7c00).
	rest, mid := man&(1<<shift-1), uint32(1)<<(shift-1)
	if rest > mid || (rest == mid && half&1 == 1) {
		half++
	}
	return sign | uint16(half)
}

// FromHalf widens binary16 bits to float32 exactly.
func FromHalf(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch exp {
	case 0x1f: // Inf or NaN
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case 0: // zero or subnormal: man × 2^-24, exact in float32
		return math.Float32frombits(sign | math.Float32bits(float32(man)/(1<<24)))
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | man<<13)
}
