package gemm

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stratadb/strata/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// naive is C += A·B by the definition, in float64.
func naive(m, k, n int, a []float32, lda int, b func(l, j int) float32, c []float32, ldc int) {
	for i := range m {
		for j := range n {
			var s float64
			for l := range k {
				s += float64(a[i*lda+l]) * float64(b(l, j))
			}
			c[i*ldc+j] += float32(s)
		}
	}
}

func random(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

// TestMulAdd compares both kernels with the definition over shapes that exercise the
// partial row tiles, padded panels, strides and an empty inner dimension.
func TestMulAdd(t *testing.T) {
	kernels := map[string]bool{"go": false}
	if useAsm {
		kernels["avx2"] = true
	}
	defer func(v bool) { useAsm = v }(useAsm)
	for name, asm := range kernels {
		useAsm = asm
		r := rand.New(rand.NewPCG(7, 9))
		for _, m := range []int{1, 2, 3, 4, 5, 7, 8, 13} {
			for _, k := range []int{0, 1, 5, 16, 67} {
				for _, n := range []int{1, 15, 16, 17, 48, 70} {
					for _, transposed := range []bool{false, true} {
						lda, ldb, ldc := k+3, n+5, Padded(n)+2
						a := random(r, m*lda)
						var p Panels
						var b []float32
						var at func(l, j int) float32
						if transposed {
							ldb = k + 1
							b = random(r, n*ldb)
							p.PackTransposed(k, n, b, ldb)
							at = func(l, j int) float32 { return b[j*ldb+l] }
						} else {
							b = random(r, k*ldb)
							p.Pack(k, n, b, ldb)
							at = func(l, j int) float32 { return b[l*ldb+j] }
						}
						c := random(r, m*ldc)
						want := append([]float32(nil), c...)
						naive(m, k, n, a, lda, at, want, ldc)
						p.MulAdd(m, a, lda, c, ldc)
						for i := range m {
							for j := range ldc {
								w := want[i*ldc+j]
								if diff := math.Abs(float64(c[i*ldc+j] - w)); diff > 1e-4*(1+math.Abs(float64(w))) {
									t.Fatalf("%s m=%d k=%d n=%d transposed=%v: C[%d][%d] = %v, want %v", name, m, k, n, transposed, i, j, c[i*ldc+j], w)
								}
							}
						}
					}
				}
			}
		}
	}
}

func BenchmarkMulAdd(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	m, k, n := 64, 512, 1536
	var p Panels
	p.Pack(k, n, random(r, k*n), n)
	a, c := random(r, m*k), make([]float32, m*n)
	for b.Loop() {
		p.MulAdd(m, a, k, c, n)
	}
	b.ReportMetric(float64(b.N)*float64(2*m*k*n)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}
