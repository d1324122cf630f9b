package cuda

import (
	"fmt"

	"github.com/ddpmgo/ddpm/ops"
)

// Launchers of kernels/sampler.cu.

// SamplerStep: x̂0 = RA·x − RM·e (clamped if Clip); out = CX·x + C0·x̂0 + CE·e + CZ·z + CP·p, a term with a zero
// coefficient left out and its operand not read (then it may be nil and is passed as a null pointer).
func (be *Backend) SamplerStep(c ops.StepCoef, x, e, z, p, out ops.Buf) {
	xs := be.buf("SamplerStep", "x", x)
	n := xs.n
	operand := func(name string, b ops.Buf, read bool) Arg {
		if !read {
			return Ptr(0)
		}
		if isNilBuf(b) {
			panic(fmt.Sprintf("cuda SamplerStep %+v: %s is nil but its coefficient is not 0", c, name))
		}
		return Ptr(be.bufs("SamplerStep", n, []string{name}, b)[0].p)
	}
	be.launch1D("SamplerStep", "sampler_step_f32", n, Ptr(xs.p), operand("e", e, c.C0 != 0 || c.CE != 0),
		operand("z", z, c.CZ != 0), operand("p", p, c.CP != 0), operand("out", out, true), I64(int64(n)),
		F32(c.RA), F32(c.RM), F32(c.CX), F32(c.C0), F32(c.CE), F32(c.CZ), F32(c.CP), I32(b2i(c.Clip)))
}

// isNilBuf reports a nil interface or a nil *Buf.
func isNilBuf(b ops.Buf) bool {
	if b == nil {
		return true
	}
	cb, ok := b.(*Buf)
	return ok && cb == nil
}
