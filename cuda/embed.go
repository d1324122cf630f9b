package cuda

import (
	"fmt"

	"github.com/ddpmgo/ddpm/ops"
)

// Launcher of kernels/embed.cu.

// embedThreads is EMBED_THREADS of kernels/embed.cu.
const embedThreads = 256

// TimestepEmbedding: for i < half = Dim/2, f_i = exp(−ln(10000)·i/(half − FreqShift)), a = t_n·f_i,
// y[n,i] = cos(a), y[n,half+i] = sin(a) with FlipSinToCos (sin, then cos, without); phase in double on the device;
// y[n,Dim−1] = 0 for odd Dim.
func (be *Backend) TimestepEmbedding(s ops.EmbedShape, t, y ops.Buf) {
	const op = "TimestepEmbedding"
	half := s.Dim / 2
	if s.N < 0 || s.Dim < 1 || (half > 0 && !(float64(half)-s.FreqShift > 0)) {
		panic(fmt.Sprintf("cuda %s %+v: invalid shape (Dim ≥ 1 and Dim/2 − FreqShift > 0)", op, s))
	}
	i32(op, s, s.N*s.Dim)
	ts := be.arg(op, s, "t", t, s.N)
	ys := be.arg(op, s, "y", y, s.N*s.Dim)
	be.gridStride(op, "timestep_embedding_f32", s.N*s.Dim, embedThreads, Ptr(ts.p), Ptr(ys.p), I32(int32(s.N)),
		I32(int32(s.Dim)), I32(b2i(s.FlipSinToCos)), F64(s.FreqShift))
}
