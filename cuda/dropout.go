package cuda

import (
	"fmt"

	"github.com/ddpmgo/ddpm/ops"
)

// Launchers of kernels/dropout.cu.

// dropoutThreads is DROPOUT_THREADS of kernels/dropout.cu.
const dropoutThreads = 256

// Dropout: y[i] = x[i]/(1−rate) where rng.Uniform(seed, rng.StreamDropout, offset+i) ≥ rate, else 0; the same mask
// as the cpu backend's, bit for bit (the scale is formed in float64 as there).
func (be *Backend) Dropout(rate float32, seed, offset uint64, x, y ops.Buf) {
	be.dropout("Dropout", []string{"x", "y"}, rate, seed, offset, x, y, false)
}

// DropoutBackward: dx[i] += dy[i]/(1−rate) where the forward kept element i (the mask is recomputed).
func (be *Backend) DropoutBackward(rate float32, seed, offset uint64, dy, dx ops.Buf) {
	be.dropout("DropoutBackward", []string{"dy", "dx"}, rate, seed, offset, dy, dx, true)
}

func (be *Backend) dropout(op string, names []string, rate float32, seed, offset uint64, src, dst ops.Buf, acc bool) {
	if !(rate >= 0 && rate < 1) {
		panic(fmt.Sprintf("cuda %s: rate %v outside [0, 1)", op, rate))
	}
	s := be.bufs(op, be.buf(op, names[0], src).n, names, src, dst)
	scale := float32(1 / (1 - float64(rate)))
	be.gridStride(op, "dropout_f32", s[0].n, dropoutThreads, Ptr(s[0].p), Ptr(s[1].p), I64(int64(s[0].n)), F32(rate),
		F32(scale), U64(seed), U64(offset), I32(b2i(acc)))
}
