package cpu

import (
	"math/rand/v2"

	"github.com/ddpmgo/ddpm/ops"
)

// normalBuf is a new buffer of be holding n standard normal draws of r.
func normalBuf(be *Backend[float32], r *rand.Rand, n int) ops.Buf {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	b := be.Alloc(n)
	be.Upload(b, v)
	return b
}
