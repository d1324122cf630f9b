package opstest

import (
	"fmt"
	"math"

	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/ops"
)

// The optional capabilities, each run through what the training loop uses: the backend's own implementation where it
// has one (ops.NewStepControl, an ops.Feeder), else the host implementation that defines it. On the CPU backends both
// sides are the host implementations; on a device the kernels are compared with them.

func capabilityCases() []Case {
	cs := []Case{{Name: "Timesteps", Methods: []string{"Timesteps"}, Tol: 0, Why: "the same Philox bits and integer arithmetic",
		Run: func(e *Env) {
			e.B.Timesteps(7, 2, 5, 1000, e.Out("t T=1000", 33))
			e.B.Timesteps(7, 2, 1<<40, 1, e.Out("t T=1", 3))
		}}}
	for _, sticky := range []bool{false, true} {
		cs = append(cs, Case{Name: fmt.Sprintf("StepControl/sticky=%v", sticky),
			Methods: []string{"StepController.NewStepControl", "StepControl.Loss", "StepControl.Update", "StepControl.Read",
				"StepControl.SetSettings", "StepControl.Free"},
			Tol: tolAdam, Why: whyAdam + "; window sums of float32 losses and norms",
			Run: func(e *Env) { stepControlCase(e, sticky) }})
	}
	cs = append(cs, Case{Name: "Feed", Methods: []string{"Feeder.NewFeed", "Feed.SetOrder", "Feed.Gather", "Feed.Free"},
		Tol: 0, Why: "uint8 → float32 by one division, as data.ToFloat; the flips are the same Philox draws",
		Run: feedCase})
	for _, s := range []ops.ConvShape{
		{N: 2, Cin: 16, H: 8, W: 8, Cout: 32, K: 3, Stride: 1, Pad: 1},
		{N: 4, Cin: 32, H: 4, W: 4, Cout: 16, K: 1, Stride: 1},
		{N: 2, Cin: 64, H: 8, W: 7, Cout: 32, K: 3, Stride: 1, Pad: 1}, // 64 channels: kept on the GPU too (cuda/keep.go)
	} {
		kmax := max(s.Cin*s.K*s.K, s.Cout*s.K*s.K, s.N*s.OutH()*s.OutW())
		cs = append(cs, Case{Name: fmt.Sprintf("Conv2D/kept x/%dx%dx%dx%d->%d/k%d", s.N, s.Cin, s.H, s.W, s.Cout, s.K),
			Methods: []string{"ConvInputKeeper.KeptLen", "ConvInputKeeper.KeepConvInput", "ConvInputKeeper.Kept", "Conv2D",
				"Conv2DBackward"},
			Tol: tolGEMM, Why: whyGEMM, BF16: &BF16Band{K: kmax, Stages: 1, Amp: 1, Why: "db sums the float32 dy"}, Conv: &s,
			Run: func(e *Env) { keptConvCase(e, s) }})
	}
	return cs
}

// keptConvCase runs a convolution and its backward pass on x kept where the backend keeps it (ops.ConvInputKeeper;
// else on x itself, as the U-Net does): the results are those of the plain convolution at the backend's precision.
// The kept storage lies between guard bands of Sentinel, checked here (it is not compared: its form is the backend's).
func keptConvCase(e *Env, s ops.ConvShape) {
	xn, wn, yn := s.N*s.Cin*s.H*s.W, s.Cout*s.Cin*s.K*s.K, s.N*s.Cout*s.OutH()*s.OutW()
	x := e.In("x", e.Randn(xn, 1))
	w, b := e.In("w", e.Randn(wn, 0.3)), e.In("b", e.Randn(s.Cout, 1))
	xin, check := x, func() {}
	if n := ops.KeptLen(e.B, s); n > 0 {
		k := e.B.(ops.ConvInputKeeper)
		full := e.B.Alloc(n + 2*Guard)
		init := make([]float32, n+2*Guard)
		for i := range init {
			init[i] = Sentinel
		}
		e.B.Upload(full, init)
		kept := e.B.Slice(full, Guard, n)
		k.KeepConvInput(s, x, kept)
		xin = k.Kept(s, kept)
		check = func() {
			got := e.download(full)
			for i := range got {
				if (i < Guard || i >= Guard+n) && got[i] != Sentinel {
					e.Errorf("KeepConvInput %+v: guard band of the kept x written at %d", s, i-Guard)
					return
				}
			}
		}
	}
	e.B.Conv2D(s, xin, w, b, e.Out("y", yn))
	dy := e.In("dy", e.Randn(yn, 1))
	e.B.Conv2DBackward(s, xin, w, dy, e.Acc("dx", e.Randn(xn, 1)), e.Acc("dw", e.Randn(wn, 1)), e.Acc("db", e.Randn(s.Cout, 1)))
	e.B.Conv2DBackward(s, xin, w, dy, nil, e.Acc("dw only", e.Randn(wn, 1)), nil)
	check()
}

// stepControlCase runs 6 steps of a controller with A = 2 micro-batches and a window of 3, reading after steps 3 and
// 6: clipping on (the random gradients exceed the threshold in some steps), step 2 poisoned with a NaN gradient and
// step 5 with an Inf loss. Without sticky they are skipped and the updates after them take the next settings rows;
// with sticky nothing updates after step 2 and the gradients are kept.
func stepControlCase(e *Env, sticky bool) {
	const n, A, W = 301, 2, 3
	c := ops.StepConfig{A: A, MaxNorm: 2.5, Sticky: sticky, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Window: W}
	sc := ops.NewStepControl(e.B, c)
	defer sc.Free()
	p, m, ema := e.Acc("p", e.Randn(n, 1)), e.Acc("m", e.Randn(n, 0.01)), e.Acc("ema", e.Randn(n, 1))
	v := e.Acc("v", e.Uniform(n, 0, 1e-2))
	g := e.Acc("g", make([]float32, n))
	settings := func(k0 int) []ops.StepSettings {
		s := make([]ops.StepSettings, W)
		for j := range s {
			k := float64(k0 + j)
			s[j] = ops.StepSettings{LR: float32(1e-3 * k), Decay: float32(1e-5 * k), RC1: float32(1 / (1 - math.Pow(0.9, k))),
				RC2: float32(1 / (1 - math.Pow(0.999, k))), EMADecay: float32(0.5 + 0.01*k)}
		}
		return s
	}
	record := func(name string, w ops.Window, err error) {
		if err != nil {
			e.Errorf("Read: %v", err)
		}
		e.Record(name, []float32{float32(w.Loss), float32(w.Norm), float32(w.Steps), float32(w.Taken), float32(w.Bad),
			float32(w.FirstBad), float32(w.BadLoss), float32(w.BadNormSq)})
	}
	w, err := sc.Read()
	if err != nil || w != (ops.Window{}) {
		e.Errorf("first Read: %+v, %v; want an empty window", w, err)
	}
	sc.SetSettings(settings(1))
	for step := 1; step <= 6; step++ {
		grad := e.Randn(n, 0.3)
		if step == 2 {
			grad[17] = float32(math.NaN())
		}
		e.B.Upload(g, grad) // the accumulated gradient, as backward leaves it
		for k := 0; k < A; k++ {
			loss := 0.5 + 0.1*float32(step) + 0.01*float32(k)
			if step == 5 && k == 1 {
				loss = float32(math.Inf(1))
			}
			e.B.Upload(sc.Loss(k), []float32{loss})
		}
		sc.Update(p, g, m, v, ema)
		// zeroed unless the step is skipped by a sticky controller (the non-sticky skips 2 and 5 too)
		e.Record(fmt.Sprintf("g after step %d", step), e.download(g))
		if step%W == 0 {
			w, err := sc.Read()
			record(fmt.Sprintf("window after step %d", step), w, err)
			sc.SetSettings(settings(step + 1))
		}
	}
}

// feedCase gathers batches of 7 images of 2×3×5 bytes from an order, with and without flips, at two epochs.
func feedCase(e *Env) {
	const n, c, h, w = 7, 2, 3, 5
	img := &data.Images{C: c, H: h, W: w, Pix: make([]uint8, n*c*h*w)}
	for i := range img.Pix {
		img.Pix[i] = uint8(e.rnd.Intn(256))
	}
	img.Pix[0], img.Pix[1] = 0, 255 // −1 and +1 exactly
	var f ops.Feed
	if fr, ok := e.B.(ops.Feeder); ok {
		var err error
		if f, err = fr.NewFeed(img.Pix, n, c, h, w); err != nil {
			e.Errorf("NewFeed: %v", err)
			return
		}
	} else {
		f = data.NewHostFeed(e.B, img)
	}
	defer func() {
		if err := f.Free(); err != nil {
			e.Errorf("Free: %v", err)
		}
	}()
	if err := f.SetOrder([]int{0, 1}); err == nil {
		e.Errorf("SetOrder accepted an order of 2 for %d images", n)
	}
	for _, epoch := range []int{0, 3} {
		if err := f.SetOrder(data.EpochOrder(11, epoch, n)); err != nil {
			e.Errorf("SetOrder: %v", err)
		}
		f.Gather(epoch, 0, 3, false, 11, e.Out(fmt.Sprintf("epoch %d batch 0", epoch), 3*c*h*w))
		f.Gather(epoch, 3, 4, true, 11, e.Out(fmt.Sprintf("epoch %d batch 1 flipped", epoch), 4*c*h*w))
	}
}
