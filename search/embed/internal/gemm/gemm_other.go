//go:build !amd64

package gemm

var useAsm = false

func kernel(k int, a []float32, lda int, panel []float32, c []float32, ldc int) {
	kernelGo(k, a, lda, panel, c, ldc)
}
