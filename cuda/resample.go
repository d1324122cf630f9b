package cuda

import (
	"fmt"

	"github.com/ddpmgo/ddpm/ops"
)

// Launchers of kernels/resample.cu.

// resampleThreads is RESAMPLE_THREADS of kernels/resample.cu.
const resampleThreads = 256

type resampleShape struct{ NC, H, W int }

func checkResample(op string, s resampleShape) {
	if s.NC < 0 || s.H < 1 || s.W < 1 {
		panic(fmt.Sprintf("cuda %s %+v: invalid shape", op, s))
	}
	i32(op, s, 4*s.NC*s.H*s.W)
}

// Upsample2x: nearest ×2, x [nc, h, w] → y [nc, 2h, 2w], y[c,i,j] = x[c,i/2,j/2].
func (be *Backend) Upsample2x(nc, h, w int, x, y ops.Buf) {
	const op = "Upsample2x"
	s := resampleShape{nc, h, w}
	checkResample(op, s)
	xs := be.arg(op, s, "x", x, nc*h*w)
	ys := be.arg(op, s, "y", y, 4*nc*h*w)
	be.gridStride(op, "upsample2x_f32", 4*nc*h*w, resampleThreads, Ptr(xs.p), Ptr(ys.p), I32(int32(nc)), I32(int32(h)),
		I32(int32(w)))
}

// Upsample2xBackward: dx[c,i,j] += the sum of the four dy it was copied to.
func (be *Backend) Upsample2xBackward(nc, h, w int, dy, dx ops.Buf) {
	const op = "Upsample2xBackward"
	s := resampleShape{nc, h, w}
	checkResample(op, s)
	dys := be.arg(op, s, "dy", dy, 4*nc*h*w)
	dxs := be.arg(op, s, "dx", dx, nc*h*w)
	be.gridStride(op, "upsample2x_bwd_f32", nc*h*w, resampleThreads, Ptr(dys.p), Ptr(dxs.p), I32(int32(nc)),
		I32(int32(h)), I32(int32(w)))
}
