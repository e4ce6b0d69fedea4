// Package gemm multiplies float32 matrices for the built-in embedder's forward pass:
// C += A·B, with B packed once into column panels so that the inner kernel reads it
// sequentially. On amd64 with AVX2 and FMA the kernel is assembly (8 fused multiply-adds of
// 8 lanes per step, on a 4×16 tile of C held in registers); elsewhere it is plain Go.
//
// Results are not bit-identical between the two kernels (fused multiply-adds round once),
// but both are accurate float32 sums.
package gemm

// Width is the number of columns of a panel, and of the kernel's tile.
const Width = 16

// rows is the height of the kernel's tile.
const rows = 4

// Panels is a k×n matrix B packed for MulAdd: ⌈n/16⌉ panels, each k rows of 16 contiguous
// values, the last panel padded with zeros. The zero value is an empty matrix.
type Panels struct {
	K, N int
	data []float32
}

// Pack packs the k×n row-major matrix b (row stride ldb) into p, reusing p's memory.
func (p *Panels) Pack(k, n int, b []float32, ldb int) {
	p.reset(k, n)
	for l := range k {
		row := b[l*ldb : l*ldb+n]
		for j, v := range row {
			p.data[(j/Width*k+l)*Width+j%Width] = v
		}
	}
}

// PackTransposed packs the k×n matrix whose element (l, j) is b[j*ldb+l], that is the
// transpose of the n×k row-major matrix b, into p.
func (p *Panels) PackTransposed(k, n int, b []float32, ldb int) {
	p.reset(k, n)
	for j := range n {
		col := b[j*ldb : j*ldb+k]
		base := j / Width * k * Width
		for l, v := range col {
			p.data[base+l*Width+j%Width] = v
		}
	}
}

func (p *Panels) reset(k, n int) {
	size := k * Padded(n)
	if cap(p.data) < size {
		p.data = make([]float32, size)
	}
	p.K, p.N, p.data = k, n, p.data[:size]
	clear(p.data)
}

// Padded is n rounded up to a whole number of panels: the columns MulAdd writes.
func Padded(n int) int { return (n + Width - 1) / Width * Width }

// MulAdd computes C += A·B for the m×K matrix a (row stride lda) and the m×N matrix c (row
// stride ldc). It writes Padded(N) columns of each row of c; the padding columns receive
// zeros added, so ldc and the length of c must allow for them.
func (p *Panels) MulAdd(m int, a []float32, lda int, c []float32, ldc int) {
	k, n16 := p.K, Padded(p.N)
	if m == 0 || n16 == 0 || k == 0 {
		return
	}
	// Check the bounds once: the assembly kernel does not.
	_ = a[(m-1)*lda+k-1]
	_ = c[(m-1)*ldc+n16-1]
	full := m / rows * rows
	for j := 0; j < n16; j += Width {
		panel := p.data[j*k : (j+Width)*k]
		for i := 0; i < full; i += rows {
			kernel(k, a[i*lda:], lda, panel, c[i*ldc+j:], ldc)
		}
	}
	if full == m {
		return
	}
	// The last one to three rows go through a zero-padded tile of four.
	left := m - full
	tmpA := make([]float32, rows*k)
	tmpC := make([]float32, rows*n16)
	for r := range left {
		copy(tmpA[r*k:(r+1)*k], a[(full+r)*lda:])
		copy(tmpC[r*n16:(r+1)*n16], c[(full+r)*ldc:])
	}
	for j := 0; j < n16; j += Width {
		kernel(k, tmpA, k, p.data[j*k:(j+Width)*k], tmpC[j:], n16)
	}
	for r := range left {
		copy(c[(full+r)*ldc:(full+r)*ldc+n16], tmpC[r*n16:(r+1)*n16])
	}
}

// kernelGo is the portable kernel: C[0:4][0:16] += A[0:4][0:k] · panel[0:k][0:16].
func kernelGo(k int, a []float32, lda int, panel []float32, c []float32, ldc int) {
	for r := range rows {
		var acc [Width]float32
		row := a[r*lda : r*lda+k]
		for l, x := range row {
			b := panel[l*Width : (l+1)*Width]
			for t := range acc {
				acc[t] += x * b[t]
			}
		}
		dst := c[r*ldc : r*ldc+Width]
		for t := range dst {
			dst[t] += acc[t]
		}
	}
}
