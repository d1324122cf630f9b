package cuda

import (
	"fmt"
	"math"

	"github.com/ddpmgo/ddpm/ops"
)

// Launchers of kernels/optim.cu.

// AdamWStep updates p, m, v in place from g (see ops.AdamW); the bias corrections are formed in float64.
func (be *Backend) AdamWStep(h ops.AdamW, p, g, m, v ops.Buf) {
	if h.Step < 1 {
		panic(fmt.Sprintf("cuda AdamWStep %+v: Step is 1-based", h))
	}
	s := be.bufs("AdamWStep", p.Len(), []string{"p", "g", "m", "v"}, p, g, m, v)
	rc1 := float32(1 / (1 - math.Pow(float64(h.Beta1), float64(h.Step))))
	rc2 := float32(1 / (1 - math.Pow(float64(h.Beta2), float64(h.Step))))
	n := s[0].n
	be.launch1D("AdamWStep", "adamw_f32", n, Ptr(s[0].p), Ptr(s[1].p), Ptr(s[2].p), Ptr(s[3].p), I64(int64(n)),
		F32(h.LR), F32(h.Beta1), F32(h.Beta2), F32(h.Eps), F32(h.LR*h.WeightDecay), F32(h.GradScale), F32(rc1), F32(rc2))
}

// EMA: e[i] = decay·e[i] + (1−decay)·p[i].
func (be *Backend) EMA(decay float32, e, p ops.Buf) {
	s := be.bufs("EMA", e.Len(), []string{"e", "p"}, e, p)
	be.launch1D("EMA", "ema_f32", s[0].n, Ptr(s[0].p), Ptr(s[1].p), F32(decay), I64(int64(s[0].n)))
}
