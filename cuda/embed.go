package cuda

import (
	"fmt"

	"github.com/ddpmgo/ddpm/ops"
)

// Launcher of kernels/embed.cu.

// embedThreads is EMBED_THREADS of kernels/embed.cu.
const embedThreads = 256

// TimestepEmbedding: for i < half = dim/2, f_i = exp(−ln(10000)·i/half), y[n,i] = cos(t_n·f_i),
// y[n,half+i] = sin(t_n·f_i) (phase in double on the device); y[n,dim−1] = 0 for odd dim.
func (be *Backend) TimestepEmbedding(n, dim int, t, y ops.Buf) {
	const op = "TimestepEmbedding"
	sh := struct{ N, Dim int }{n, dim}
	if n < 0 || dim < 1 {
		panic(fmt.Sprintf("cuda %s %+v: invalid shape", op, sh))
	}
	i32(op, sh, n*dim)
	ts := be.arg(op, sh, "t", t, n)
	ys := be.arg(op, sh, "y", y, n*dim)
	be.gridStride(op, "timestep_embedding_f32", n*dim, embedThreads, Ptr(ts.p), Ptr(ys.p), I32(int32(n)), I32(int32(dim)))
}
