package cuda

import (
	"fmt"
	"math"
	"slices"

	"github.com/ddpmgo/ddpm/ops"
)

// Launchers of kernels/optim.cu.

// AdamWStep updates p, m, v in place from g (see ops.AdamW).
func (be *Backend) AdamWStep(h ops.AdamW, p, g, m, v ops.Buf) {
	s := be.bufs("AdamWStep", p.Len(), []string{"p", "g", "m", "v"}, p, g, m, v)
	n := s[0].n
	be.wrote(s[0].p, n)
	be.launch1D("AdamWStep", "adamw_f32", n, Ptr(s[0].p), Ptr(s[1].p), Ptr(s[2].p), Ptr(s[3].p), I64(int64(n)),
		F32(h.LR), F32(h.Beta1), F32(h.Beta2), F32(h.Eps), F32(h.Decay), F32(h.GradScale), F32(h.RC1), F32(h.RC2))
}

// EMA: e[i] = decay·e[i] + (1−decay)·p[i].
func (be *Backend) EMA(decay float32, e, p ops.Buf) {
	s := be.bufs("EMA", e.Len(), []string{"e", "p"}, e, p)
	be.wrote(s[0].p, s[0].n)
	be.launch1D("EMA", "ema_f32", s[0].n, Ptr(s[0].p), Ptr(s[1].p), F32(decay), I64(int64(s[0].n)))
}

// stepWindowBytes is sizeof(StepWindow) in kernels/optim.cu, and stepSettings the floats of one settings row.
const (
	stepWindowBytes = 64
	stepSettings    = 5
)

// stepControl is ops.StepControl on the device (kernels/optim.cu: step_control_f32 and the _ctl kernels); its
// definition is ops.HostStepControl, which it matches bit for bit given the same ‖G‖² and losses.
type stepControl struct {
	be       *Backend
	c        ops.StepConfig
	scalars  *Buf // [‖G‖², loss_0 … loss_{A−1}]
	gsq      ops.Buf
	losses   []ops.Buf
	win      DevicePtr // StepWindow
	settings *Buf      // Window rows of stepSettings floats
	uploaded []float32 // what settings holds (an unchanged table is not copied again)
	row      []float32
	taken    int  // steps since the last Read
	reset    bool // the next step starts a new window
	set      bool // SetSettings came after the last Read
}

// NewStepControl returns the device controller (ops.StepController).
func (be *Backend) NewStepControl(c ops.StepConfig) ops.StepControl {
	if c.A < 1 || c.Window < 1 || c.A > math.MaxInt32 {
		panic(fmt.Sprintf("cuda NewStepControl %+v", c))
	}
	sc := &stepControl{be: be, c: c, scalars: be.Alloc(1 + c.A).(*Buf), settings: be.Alloc(c.Window * stepSettings).(*Buf),
		row: make([]float32, c.Window*stepSettings), reset: true}
	sc.gsq = be.Slice(sc.scalars, 0, 1)
	for k := 0; k < c.A; k++ {
		sc.losses = append(sc.losses, be.Slice(sc.scalars, 1+k, 1))
	}
	win, err := be.d.Alloc(stepWindowBytes)
	if err != nil {
		panic(&ops.DeviceError{Op: fmt.Sprintf("cuda NewStepControl: %d bytes", stepWindowBytes), Err: err})
	}
	be.keep("NewStepControl", be.d.Memset32(win, 0, stepWindowBytes/4))
	sc.win = win
	return sc
}

func (sc *stepControl) Loss(k int) ops.Buf { return sc.losses[k] }

// Update launches, after SumSquares: step_control_f32 (one thread), adamw_ctl_f32 (which also zeroes g, unless the
// step is skipped by a sticky controller) and ema_ctl_f32. Only kernel arguments cross from the host.
func (sc *stepControl) Update(p, g, m, v, e ops.Buf) {
	be, c := sc.be, sc.c
	if sc.taken >= c.Window || !sc.set {
		panic(fmt.Sprintf("cuda StepControl: %d steps since the last Read, the window is %d (settings given: %v)", sc.taken, c.Window, sc.set))
	}
	s := be.bufs("StepControl", p.Len(), []string{"p", "g", "m", "v", "e"}, p, g, m, v, e)
	for _, b := range s {
		be.wrote(b.p, b.n)
	}
	be.SumSquares(g, sc.gsq)
	be.keep("StepControl", be.d.Launch("step_control_f32", Dim3{X: 1}, Dim3{X: 1}, 0, Ptr(sc.scalars.p), Ptr(sc.win),
		I32(int32(c.A)), F64(c.MaxNorm), I32(b2i(c.Sticky)), I32(b2i(sc.reset))))
	n := s[0].n
	be.launch1D("StepControl", "adamw_ctl_f32", n, Ptr(s[0].p), Ptr(s[1].p), Ptr(s[2].p), Ptr(s[3].p), I64(int64(n)),
		F32(c.Beta1), F32(c.Beta2), F32(c.Eps), I32(b2i(c.Sticky)), Ptr(sc.win), Ptr(sc.settings.p))
	be.launch1D("StepControl", "ema_ctl_f32", n, Ptr(s[4].p), Ptr(s[0].p), I64(int64(n)), Ptr(sc.win), Ptr(sc.settings.p))
	sc.taken++
	sc.reset = false
}

// Read downloads the window: one copy of 64 bytes and a synchronisation (only the synchronisation before the first
// step).
func (sc *stepControl) Read() (ops.Window, error) {
	be := sc.be
	var w ops.Window
	taken := sc.taken
	sc.taken, sc.reset, sc.set = 0, true, false
	if taken == 0 {
		return w, be.Sync()
	}
	var raw [stepWindowBytes / 4]uint32
	be.keep("StepControl Read", Download(be.d, raw[:], sc.win))
	if err := be.Sync(); err != nil {
		return w, err
	}
	f64 := func(off int) float64 { return math.Float64frombits(uint64(raw[off/4+1])<<32 | uint64(raw[off/4])) }
	i32 := func(off int) int { return int(int32(raw[off/4])) }
	return ops.Window{Loss: f64(0), Norm: f64(8), BadLoss: f64(16), BadNormSq: f64(24), Steps: i32(32), Taken: i32(36),
		Bad: i32(40), FirstBad: i32(44)}, nil
}

// SetSettings uploads the window's settings rows when they differ from those the device holds (after the warm-ups
// the rows stop changing, and a read then copies nothing to the device).
func (sc *stepControl) SetSettings(next []ops.StepSettings) {
	if len(next) < sc.c.Window {
		panic(fmt.Sprintf("cuda StepControl SetSettings: %d settings for a window of %d steps", len(next), sc.c.Window))
	}
	for i, s := range next[:sc.c.Window] {
		copy(sc.row[i*stepSettings:], []float32{s.LR, s.Decay, s.RC1, s.RC2, s.EMADecay})
	}
	if !slices.Equal(sc.row, sc.uploaded) {
		sc.be.Upload(sc.settings, sc.row)
		sc.uploaded = append(sc.uploaded[:0], sc.row...)
	}
	sc.set = true
}

// Free releases the scalars, the window and the settings.
func (sc *stepControl) Free() {
	sc.be.Free(sc.scalars)
	sc.be.Free(sc.settings)
	if sc.win != 0 {
		sc.be.keep("StepControl Free", sc.be.d.Free(sc.win))
		sc.win = 0
	}
}
