package cpu

import (
	"fmt"

	"github.com/ddpmgo/ddpm/ops"
)

type linearShape struct{ N, In, Out int }

func checkLinear(op string, s linearShape) {
	if s.N < 0 || s.In < 1 || s.Out < 1 {
		panic(fmt.Sprintf("cpu %s %+v: invalid shape", op, s))
	}
}

// Linear: y[n,o] = b[o] + Σ_i x[n,i]·w[o,i], one GEMM y = x·wᵀ; b may be nil.
func (be *Backend[T]) Linear(n, in, out int, x, w, b, y ops.Buf) {
	defer be.stop(FamLinear, be.start())
	s := linearShape{n, in, out}
	checkLinear("Linear", s)
	xs := arg(be, "Linear", s, "x", x, n*in)
	ws := arg(be, "Linear", s, "w", w, out*in)
	bs := opt(be, "Linear", s, "b", b, out)
	ys := arg(be, "Linear", s, "y", y, n*out)
	gemm(false, true, n, out, in, 1, be.bf(0, xs), in, be.bf(1, ws), in, 0, ys, out) // bf16: rounded copies (bf16.go)
	if bs != nil {
		for r := 0; r < n; r++ {
			addTo(ys[r*out:(r+1)*out], bs)
		}
	}
}

// LinearBackward accumulates dx += dy·w, dw += dyᵀ·x and db[o] += Σ_n dy[n,o] (float64,
// increasing n). Any of dx, dw, db may be nil.
func (be *Backend[T]) LinearBackward(n, in, out int, x, w, dy, dx, dw, db ops.Buf) {
	defer be.stop(FamLinear, be.start())
	s := linearShape{n, in, out}
	checkLinear("LinearBackward", s)
	xs := arg(be, "LinearBackward", s, "x", x, n*in)
	ws := arg(be, "LinearBackward", s, "w", w, out*in)
	dys := arg(be, "LinearBackward", s, "dy", dy, n*out)
	dxs := opt(be, "LinearBackward", s, "dx", dx, n*in)
	dws := opt(be, "LinearBackward", s, "dw", dw, out*in)
	dbs := opt(be, "LinearBackward", s, "db", db, out)
	if n == 0 {
		return
	}
	if dxs != nil || dws != nil {
		dyr := be.bf(2, dys) // bf16: rounded copies (bf16.go); db below sums the float32 dy
		if dxs != nil {
			gemm(false, false, n, in, out, 1, dyr, out, be.bf(1, ws), in, 1, dxs, in)
		}
		if dws != nil {
			gemm(true, false, out, in, n, 1, dyr, out, be.bf(0, xs), in, 1, dws, in)
		}
	}
	if dbs != nil {
		for o := range dbs {
			var sum float64
			for r := 0; r < n; r++ {
				sum += float64(dys[r*out+o])
			}
			dbs[o] += T(sum)
		}
	}
}
