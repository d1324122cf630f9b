package cuda

import "github.com/ddpmgo/ddpm/ops"

// Launchers of kernels/elementwise.cu.

// Add: y[i] = a[i] + b[i] (y may alias a or b).
func (be *Backend) Add(a, b, y ops.Buf) {
	s := be.bufs("Add", a.Len(), []string{"a", "b", "y"}, a, b, y)
	be.launch1D("Add", "add_f32", s[0].n, Ptr(s[0].p), Ptr(s[1].p), Ptr(s[2].p), I64(int64(s[0].n)))
}

// Axpy: y[i] += alpha·x[i].
func (be *Backend) Axpy(alpha float32, x, y ops.Buf) {
	s := be.bufs("Axpy", x.Len(), []string{"x", "y"}, x, y)
	be.launch1D("Axpy", "axpy_f32", s[0].n, F32(alpha), Ptr(s[0].p), Ptr(s[1].p), I64(int64(s[0].n)))
}

// Scale: x[i] *= alpha.
func (be *Backend) Scale(alpha float32, x ops.Buf) {
	s := be.buf("Scale", "x", x)
	be.launch1D("Scale", "scale_f32", s.n, F32(alpha), Ptr(s.p), I64(int64(s.n)))
}

// SiLU: y = x·σ(x).
func (be *Backend) SiLU(x, y ops.Buf) {
	s := be.bufs("SiLU", x.Len(), []string{"x", "y"}, x, y)
	be.launch1D("SiLU", "silu_fwd_f32", s[0].n, Ptr(s[0].p), Ptr(s[1].p), I64(int64(s[0].n)))
}

// SiLUBackward: dx += dy·σ(x)·(1 + x·(1−σ(x))).
func (be *Backend) SiLUBackward(x, dy, dx ops.Buf) {
	s := be.bufs("SiLUBackward", x.Len(), []string{"x", "dy", "dx"}, x, dy, dx)
	be.launch1D("SiLUBackward", "silu_bwd_f32", s[0].n, Ptr(s[0].p), Ptr(s[1].p), Ptr(s[2].p), I64(int64(s[0].n)))
}
