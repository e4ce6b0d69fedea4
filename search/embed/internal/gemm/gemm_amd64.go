package gemm

import "golang.org/x/sys/cpu"

// useAsm selects the assembly kernel; tests turn it off to check the portable one.
var useAsm = cpu.X86.HasAVX2 && cpu.X86.HasFMA

func kernel(k int, a []float32, lda int, panel []float32, c []float32, ldc int) {
	if useAsm {
		kernelAVX2(k, &a[0], lda, &panel[0], &c[0], ldc)
		return
	}
	kernelGo(k, a, lda, panel, c, ldc)
}

// kernelAVX2 computes C[0:4][0:16] += A[0:4][0:k] · panel[0:k][0:16] with AVX2 and FMA,
// where A's and C's rows are lda and ldc floats apart. k must be positive; the caller
// checks the bounds.
//
//go:noescape
func kernelAVX2(k int, a *float32, lda int, panel *float32, c *float32, ldc int)
