//go:build !cuda

package cuda

import (
	"math"
	"math/rand"
	"testing"

	"github.com/ddpmgo/ddpm/ops"
)

// total is the number of launches since the last reset (every kernel).
func (c *launchCounter) total() int {
	n := 0
	for _, k := range c.n {
		n += k
	}
	return n
}

// during is the number of launches that f makes.
func (c *launchCounter) during(f func()) int {
	n0 := c.total()
	f()
	return c.total() - n0
}

// ticketsClear fails unless every ticket counter is back at 0 (the last blocks set back what they counted).
func ticketsClear(t *testing.T, be *Backend) {
	t.Helper()
	tickets := make([]uint32, ticketWords)
	if err := Download(be.d, tickets, be.tickets); err != nil {
		t.Fatal(err)
	}
	for i, v := range tickets {
		if v != 0 {
			t.Fatalf("ticket %d is %d after the launches, want 0", i, v)
		}
	}
}

// plainBackend hides every capability but ops.Backend: ops.Conv2DAdd and ops.Conv2DBackwardSum compose their
// definitions (Conv2D, AddChannel, Add; ChannelSum, Conv2DBackward) on it.
type plainBackend struct{ ops.Backend }

// TestEmuConvFuserMatchesComposition: the cuda backend's Conv2DAdd (the channel addend and the residual in the
// GEMM's epilogue) is bit for bit the composition Conv2D, AddChannel, Add on the same backend, unsplit and split
// along k (the last block's epilogue), at every precision, in two launches fewer; Conv2DBackwardSum (the channel
// sums from the packing of dy for dw) gives the composition's dx, dw and db bit for bit and its channel sums within
// float rounding of a float64 sum, accumulating (twice: the per-sample tickets are reset), leaving the elements
// between dchan's rows untouched, in one launch fewer; without dw it falls back to ChannelSum (bit for bit).
func TestEmuConvFuserMatchesComposition(t *testing.T) {
	shapes := map[string]ops.ConvShape{
		"unsplit": {N: 2, Cin: 8, H: 6, W: 5, Cout: 12, K: 3, Stride: 1, Pad: 1},
		"split-k": {N: 16, Cin: 64, H: 8, W: 8, Cout: 64, K: 3, Stride: 1, Pad: 1}, // as TestEmuSplitKInOneLaunch
		"1x1":     {N: 3, Cin: 6, H: 4, W: 4, Cout: 10, K: 1, Stride: 1, Pad: 0},
	}
	for _, p := range []ops.Precision{ops.FP32, ops.TF32, ops.BF16} {
		for name, s := range shapes {
			t.Run(string(p)+"/"+name, func(t *testing.T) {
				lc := &launchCounter{n: map[string]int{}}
				be := guardedBackend(t, func(d Driver) Driver { lc.Driver = d; return lc })
				if err := be.SetPrecision(p); err != nil {
					t.Fatal(err)
				}
				rnd := rand.New(rand.NewSource(11))
				ohw := s.OutH() * s.OutW()
				xn, wn, yn := s.N*s.Cin*s.H*s.W, s.Cout*s.Cin*s.K*s.K, s.N*s.Cout*ohw
				ld := s.Cout + 5
				chN := ops.RowsLen(s.N, s.Cout, ld)
				x, w, b := fillsUpload(be, fillsRand(rnd, xn)), fillsUpload(be, fillsRand(rnd, wn)), fillsUpload(be, fillsRand(rnd, s.Cout))
				ch, res, dy := fillsUpload(be, fillsRand(rnd, chN)), fillsUpload(be, fillsRand(rnd, yn)), fillsUpload(be, fillsRand(rnd, yn))
				a := ops.ConvAddends{Chan: ch, ChanLd: ld, Res: res}

				// Forward.
				yF, yC := be.Alloc(yn), be.Alloc(yn)
				fused := lc.during(func() { ops.Conv2DAdd(be, s, x, w, b, yF, a) })
				composed := lc.during(func() { ops.Conv2DAdd(plainBackend{be}, s, x, w, b, yC, a) })
				sameFloatBits(t, "y", fillsDownload(t, be, yF), fillsDownload(t, be, yC))
				if fused != composed-2 {
					t.Errorf("forward: %d launches fused, %d composed; want two fewer", fused, composed)
				}

				// Backward, twice into the same gradients.
				dch0 := fillsRand(rnd, chN)
				gap := float32(math.NaN()) // between dchan's rows: must stay as it is
				for i := range dch0 {
					if i%ld >= s.Cout {
						dch0[i] = gap
					}
				}
				type grads struct{ dx, dw, db, dch ops.Buf }
				mk := func() grads {
					return grads{be.Alloc(xn), be.Alloc(wn), fillsUpload(be, make([]float32, s.Cout)), fillsUpload(be, dch0)}
				}
				gF, gC := mk(), mk()
				be.Fill(gF.dx, 0)
				be.Fill(gF.dw, 0)
				be.Fill(gC.dx, 0)
				be.Fill(gC.dw, 0)
				if err := be.Sync(); err != nil {
					t.Fatal(err)
				}
				twice := func(b ops.Backend, g grads) func() {
					return func() {
						for k := 0; k < 2; k++ {
							ops.Conv2DBackwardSum(b, s, x, w, dy, g.dx, g.dw, g.db, g.dch, ld)
						}
					}
				}
				fused = lc.during(twice(be, gF))
				composed = lc.during(twice(plainBackend{be}, gC))
				if fused != composed-2 {
					t.Errorf("backward: %d launches fused, %d composed (two calls each); want one fewer a call", fused, composed)
				}
				sameFloatBits(t, "dx", fillsDownload(t, be, gF.dx), fillsDownload(t, be, gC.dx))
				sameFloatBits(t, "dw", fillsDownload(t, be, gF.dw), fillsDownload(t, be, gC.dw))
				sameFloatBits(t, "db", fillsDownload(t, be, gF.db), fillsDownload(t, be, gC.db))
				dyv := fillsDownload(t, be, dy)
				gotF, gotC := fillsDownload(t, be, gF.dch), fillsDownload(t, be, gC.dch)
				for n := 0; n < s.N; n++ {
					for c := 0; c < ld && n*ld+c < chN; c++ {
						i := n*ld + c
						if c >= s.Cout {
							if !math.IsNaN(float64(gotF[i])) {
								t.Fatalf("dchan[%d] between rows: %v, want it untouched (NaN)", i, gotF[i])
							}
							continue
						}
						var sum float64
						for j := 0; j < ohw; j++ {
							sum += float64(dyv[(n*s.Cout+c)*ohw+j])
						}
						want := float64(dch0[i]) + 2*sum
						if d := math.Abs(float64(gotF[i]) - want); !(d <= 1e-5*(1+math.Abs(want))) {
							t.Errorf("dchan[%d,%d] = %v fused, want %v (composed %v)", n, c, gotF[i], want, gotC[i])
						}
					}
				}
				ticketsClear(t, be)

				// Without dw: ChannelSum's launch, the same sums.
				dA, dB := fillsUpload(be, dch0), fillsUpload(be, dch0)
				be.Conv2DBackwardSum(s, x, w, dy, nil, nil, nil, dA, ld)
				plainBackend{be}.ChannelSum(s.N, s.Cout, ohw, ld, dy, dB)
				sameFloatBits(t, "dchan without dw", fillsDownload(t, be, dA), fillsDownload(t, be, dB))
			})
		}
	}
}

// TestEmuConvBackwardSumManySamples: with more samples than tickets for their sums (N + 1 > ticketWords),
// Conv2DBackwardSum falls back to ChannelSum's launch: bit for bit the composition, in as many launches.
func TestEmuConvBackwardSumManySamples(t *testing.T) {
	s := ops.ConvShape{N: ticketWords, Cin: 2, H: 2, W: 3, Cout: 3, K: 1, Stride: 1, Pad: 0}
	lc := &launchCounter{n: map[string]int{}}
	be := guardedBackend(t, func(d Driver) Driver { lc.Driver = d; return lc })
	rnd := rand.New(rand.NewSource(5))
	xn, yn, ld := s.N*s.Cin*6, s.N*s.Cout*6, s.Cout+1
	x, w, dy := fillsUpload(be, fillsRand(rnd, xn)), fillsUpload(be, fillsRand(rnd, s.Cout*s.Cin)), fillsUpload(be, fillsRand(rnd, yn))
	dch0 := fillsRand(rnd, ops.RowsLen(s.N, s.Cout, ld))
	var got [][]float32
	var launches []int
	for _, b := range []ops.Backend{be, plainBackend{be}} {
		dx, dw, db, dch := be.Alloc(xn), be.Alloc(s.Cout*s.Cin), be.Alloc(s.Cout), fillsUpload(be, dch0)
		launches = append(launches, lc.during(func() { ops.Conv2DBackwardSum(b, s, x, w, dy, dx, dw, db, dch, ld) }))
		for _, o := range []ops.Buf{dx, dw, db, dch} {
			got = append(got, fillsDownload(t, be, o))
		}
	}
	for i, name := range []string{"dx", "dw", "db", "dchan"} {
		sameFloatBits(t, name, got[i], got[4+i])
	}
	if launches[0] != launches[1] {
		t.Errorf("%d launches fused, %d composed; the fallback should launch ChannelSum as the composition does",
			launches[0], launches[1])
	}
}

// sameFloatBits fails unless got and want hold the same float32 bit patterns.
func sameFloatBits(t *testing.T, name string, got, want []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s[%d] = %v (%#x), want %v (%#x) bit for bit", name, i, got[i], math.Float32bits(got[i]), want[i],
				math.Float32bits(want[i]))
		}
	}
}

// TestEmuNormBackwardResMatchesComposition: GroupNormBackwardRes and GroupNormSiLUBackwardRes (the residual's
// gradient added in the kernel's store of dx) are bit for bit Axpy(1, res, dx) followed by the plain backward on the
// same backend, into a dx that holds values and into a waiting zero fill, in one launch fewer.
func TestEmuNormBackwardResMatchesComposition(t *testing.T) {
	s := ops.NormShape{N: 3, C: 8, HW: 12, G: 4, Eps: 1e-5}
	n := s.N * s.C * s.HW
	for _, silu := range []bool{false, true} {
		for _, fresh := range []bool{false, true} {
			name := map[bool]string{false: "groupnorm", true: "groupnorm-silu"}[silu] + map[bool]string{false: "/into-values", true: "/into-fill"}[fresh]
			t.Run(name, func(t *testing.T) {
				lc := &launchCounter{n: map[string]int{}}
				be := guardedBackend(t, func(d Driver) Driver { lc.Driver = d; return lc })
				rnd := rand.New(rand.NewSource(3))
				x, gamma, beta := fillsUpload(be, fillsRand(rnd, n)), fillsUpload(be, fillsRand(rnd, s.C)), fillsUpload(be, fillsRand(rnd, s.C))
				y, stats := be.Alloc(n), be.Alloc(2*s.N*s.G)
				be.GroupNorm(s, x, gamma, beta, y, stats)
				dy, res, dx0 := fillsRand(rnd, n), fillsUpload(be, fillsRand(rnd, n)), fillsRand(rnd, n)
				dyb := fillsUpload(be, dy)
				run := func(b ops.Backend) (dx, dg, db []float32, launches int) {
					dxb, dgb, dbb := fillsUpload(be, dx0), fillsUpload(be, make([]float32, s.C)), fillsUpload(be, make([]float32, s.C))
					if fresh {
						be.Fill(dxb, 0) // waits (fills.go): the fused op stores instead of adding
					}
					launches = lc.during(func() {
						if silu {
							ops.GroupNormSiLUBackwardRes(b, s, x, gamma, beta, stats, dyb, dxb, dgb, dbb, res)
						} else {
							ops.GroupNormBackwardRes(b, s, x, gamma, stats, dyb, dxb, dgb, dbb, res)
						}
					})
					return fillsDownload(t, be, dxb), fillsDownload(t, be, dgb), fillsDownload(t, be, dbb), launches
				}
				fx, fg, fb, fl := run(be)
				cx, cg, cb, cl := run(plainBackend{be})
				sameFloatBits(t, "dx", fx, cx)
				sameFloatBits(t, "dgamma", fg, cg)
				sameFloatBits(t, "dbeta", fb, cb)
				if fl != cl-1 {
					t.Errorf("%d launches fused, %d composed; want one fewer", fl, cl)
				}
				if fresh { // and the sums are those of the definition: res + the norm's gradient, no trace of dx0
					plain := func() []float32 {
						dxb := be.Alloc(n)
						be.Fill(dxb, 0)
						if silu {
							be.GroupNormSiLUBackward(s, x, gamma, beta, stats, dyb, dxb, nil, nil)
						} else {
							be.GroupNormBackward(s, x, gamma, stats, dyb, dxb, nil, nil)
						}
						return fillsDownload(t, be, dxb)
					}()
					rv := fillsDownload(t, be, res)
					for i := range fx {
						if want := (0 + rv[i]) + plain[i]; math.Float32bits(fx[i]) != math.Float32bits(want) {
							t.Fatalf("dx[%d] = %v, want res + the norm's gradient = %v", i, fx[i], want)
						}
					}
				}
			})
		}
	}
}

// TestEmuLinearSiLUMatchesComposition: LinearSiLU and LinearBackwardSiLU (SiLU and its gradient in the GEMM's
// epilogue) are bit for bit Linear then SiLU, and LinearBackward then SiLUBackward, on the same backend, on gemm_f32
// (fp32) and gemm_bf16 (bf16), into a dx that holds values and into a waiting zero fill, in one launch fewer each.
func TestEmuLinearSiLUMatchesComposition(t *testing.T) {
	const n, in, out = 37, 70, 45 // not multiples of the tiles
	for _, p := range []ops.Precision{ops.FP32, ops.BF16} {
		for _, fresh := range []bool{false, true} {
			t.Run(string(p)+map[bool]string{false: "/into-values", true: "/into-fill"}[fresh], func(t *testing.T) {
				lc := &launchCounter{n: map[string]int{}}
				be := guardedBackend(t, func(d Driver) Driver { lc.Driver = d; return lc })
				if err := be.SetPrecision(p); err != nil {
					t.Fatal(err)
				}
				rnd := rand.New(rand.NewSource(9))
				x, w, b := fillsUpload(be, fillsRand(rnd, n*in)), fillsUpload(be, fillsRand(rnd, out*in)), fillsUpload(be, fillsRand(rnd, out))
				dy, h := fillsUpload(be, fillsRand(rnd, n*out)), fillsUpload(be, fillsRand(rnd, n*in))
				dx0, dh0 := fillsRand(rnd, n*in), fillsRand(rnd, n*in)
				type res struct {
					y, a, dx, dw, db, dh []float32
					fwd, bwd             int
				}
				run := func(be2 ops.Backend) res {
					y, a := be.Alloc(n*out), be.Alloc(n*out)
					fwd := lc.during(func() { ops.LinearSiLU(be2, n, in, out, x, w, b, y, a) })
					dx, dw, db, dh := fillsUpload(be, dx0), fillsUpload(be, make([]float32, out*in)), fillsUpload(be, make([]float32, out)), fillsUpload(be, dh0)
					if fresh {
						be.Fill(dx, 0) // waits (fills.go): dx's GEMM stores
					}
					bwd := lc.during(func() { ops.LinearBackwardSiLU(be2, n, in, out, x, w, dy, dx, dw, db, h, dh) })
					return res{fillsDownload(t, be, y), fillsDownload(t, be, a), fillsDownload(t, be, dx),
						fillsDownload(t, be, dw), fillsDownload(t, be, db), fillsDownload(t, be, dh), fwd, bwd}
				}
				f, c := run(be), run(plainBackend{be})
				sameFloatBits(t, "y", f.y, c.y)
				sameFloatBits(t, "a", f.a, c.a)
				sameFloatBits(t, "dx", f.dx, c.dx)
				sameFloatBits(t, "dw", f.dw, c.dw)
				sameFloatBits(t, "db", f.db, c.db)
				sameFloatBits(t, "dh", f.dh, c.dh)
				if f.fwd != c.fwd-1 || f.bwd != c.bwd-1 {
					t.Errorf("launches fused %d + %d, composed %d + %d; want one fewer each", f.fwd, f.bwd, c.fwd, c.bwd)
				}
				// And against the definitions in float64: a = SiLU(y), dh = dh0 + dx·SiLU'(h).
				hv := fillsDownload(t, be, h)
				for i := range f.a {
					v := float64(f.y[i])
					if want := v / (1 + math.Exp(-v)); math.Abs(float64(f.a[i])-want) > 1e-6*(1+math.Abs(want)) {
						t.Fatalf("a[%d] = %v, SiLU(y) = %v", i, f.a[i], want)
					}
				}
				for i := range f.dh {
					v := float64(hv[i])
					s := 1 / (1 + math.Exp(-v))
					want := float64(dh0[i]) + float64(f.dx[i])*s*(1+v*(1-s))
					if math.Abs(float64(f.dh[i])-want) > 1e-5*(1+math.Abs(want)) {
						t.Fatalf("dh[%d] = %v, dh0 + dx·SiLU'(h) = %v", i, f.dh[i], want)
					}
				}
			})
		}
	}
}

// TestEmuTransposeAddMatchesComposition: TransposeAdd (the residual added by the transpose's store) is bit for bit
// Transpose then Add on the same backend, for shapes that are not whole tiles, in one launch fewer.
func TestEmuTransposeAddMatchesComposition(t *testing.T) {
	for _, sh := range [][3]int{{2, 37, 45}, {3, 64, 32}, {1, 5, 70}} {
		n, r, c := sh[0], sh[1], sh[2]
		lc := &launchCounter{n: map[string]int{}}
		be := guardedBackend(t, func(d Driver) Driver { lc.Driver = d; return lc })
		rnd := rand.New(rand.NewSource(int64(r)))
		x, res := fillsUpload(be, fillsRand(rnd, n*r*c)), fillsUpload(be, fillsRand(rnd, n*r*c))
		yF, yC := be.Alloc(n*r*c), be.Alloc(n*r*c)
		f := lc.during(func() { ops.TransposeAdd(be, n, r, c, x, res, yF) })
		cl := lc.during(func() { ops.TransposeAdd(plainBackend{be}, n, r, c, x, res, yC) })
		got, want := fillsDownload(t, be, yF), fillsDownload(t, be, yC)
		sameFloatBits(t, "y", got, want)
		if f != cl-1 {
			t.Errorf("%v: %d launches fused, %d composed; want one fewer", sh, f, cl)
		}
		xv, rv := fillsDownload(t, be, x), fillsDownload(t, be, res)
		for s := 0; s < n; s++ { // and the definition: y[s, j, i] = x[s, i, j] + res[s, j, i]
			for i := 0; i < r; i++ {
				for j := 0; j < c; j++ {
					e := s*r*c + j*r + i
					if w := xv[s*r*c+i*c+j] + rv[e]; got[e] != w {
						t.Fatalf("%v: y[%d,%d,%d] = %v, want %v", sh, s, j, i, got[e], w)
					}
				}
			}
		}
	}
}
