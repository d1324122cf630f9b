package train

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ddpmgo/ddpm/checkpoint"
	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/model"
	"github.com/ddpmgo/ddpm/ops"
)

// localGroup is a Collective of n ranks that are goroutines of one process, each with a CPU backend of its own: the
// test double of package mpi, so that the data-parallel trainer is tested in the default suite. Each collective is
// one round: every rank hands in a copy of its data, the last one to arrive publishes them, and each rank combines
// them in rank order. A rank that fails ends the group: the others' collectives return errors instead of waiting.
//
// The ranks compute one at a time (the CPU backend's oneDNN convolutions keep process-wide state, so two backends
// may not run at once in one process): a rank holds the compute token except while it waits in a collective.
type localGroup struct {
	n       int
	compute sync.Mutex
	mu      sync.Mutex
	cond    *sync.Cond
	gen     int
	arrived int
	in, out []any
	err     error
}

func newLocalGroup(n int) *localGroup {
	g := &localGroup{n: n, in: make([]any, n)}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// round hands in v and returns every rank's, in rank order.
func (g *localGroup) round(r int, v any) ([]any, error) {
	g.compute.Unlock()
	defer g.compute.Lock()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return nil, g.err
	}
	gen := g.gen
	g.in[r] = v
	g.arrived++
	if g.arrived == g.n {
		g.out, g.in, g.arrived = g.in, make([]any, g.n), 0
		g.gen++
		g.cond.Broadcast()
	}
	for g.gen == gen && g.err == nil {
		g.cond.Wait()
	}
	if g.gen == gen {
		return nil, g.err
	}
	return g.out, nil
}

func (g *localGroup) fail(r int, err error) {
	g.mu.Lock()
	if g.err == nil {
		g.err = fmt.Errorf("rank %d failed: %w", r, err)
	}
	g.cond.Broadcast()
	g.mu.Unlock()
}

type localRank struct {
	g       *localGroup
	r       int
	err     error // of the queued buffer collectives
	reduces int   // AllReduceSum calls
}

func (l *localRank) Rank() int { return l.r }
func (l *localRank) Size() int { return l.g.n }

func (l *localRank) AllReduceSum(buf ops.Buf) {
	l.reduces++
	x, all := l.broadcast(buf)
	for _, v := range all {
		for i, y := range v.([]float32) {
			x[i] += y
		}
	}
}

func (l *localRank) Broadcast(buf ops.Buf) { l.broadcast(buf) }

// broadcast sets buf to rank 0's buf and returns its data with the other ranks' copies (after an error, which it
// keeps for Flush, buf is unchanged and no copies are returned).
func (l *localRank) broadcast(buf ops.Buf) (x []float32, others []any) {
	x = cpu.Data[float32](buf)
	all, err := l.g.round(l.r, append([]float32(nil), x...))
	if err != nil {
		l.err = errors.Join(l.err, err)
		return x, nil
	}
	copy(x, all[0].([]float32))
	return x, all[1:]
}

func (l *localRank) Flush() error {
	err := l.err
	l.err = nil
	return err
}

func (l *localRank) MaxInt64(x []int64) error {
	all, err := l.g.round(l.r, append([]int64(nil), x...))
	if err != nil {
		return err
	}
	for _, v := range all {
		for i, y := range v.([]int64) {
			x[i] = max(x[i], y)
		}
	}
	return nil
}

func (l *localRank) SumFloat32(x []float32) error {
	all, err := l.g.round(l.r, append([]float32(nil), x...))
	if err != nil {
		return err
	}
	copy(x, all[0].([]float32))
	for _, v := range all[1:] {
		for i, y := range v.([]float32) {
			x[i] += y
		}
	}
	return nil
}

// rankDir is where rank r > 0 is told to write: it must stay absent (only rank 0 writes).
func rankDir(dir string, r int) string {
	if r == 0 {
		return dir
	}
	return fmt.Sprintf("%s.rank%d", dir, r)
}

// runRanks trains cfg on n ranks (goroutines, localGroup) and returns rank 0's result and every rank's error.
// opt gives the resume options; ctxs, when not nil, gives each rank its context.
func runRanks(t *testing.T, n int, cfg config.Config, ds data.Dataset, resumeFrom string, ctxs []context.Context,
	inject func(rank, step int) (string, float32)) (Result, []error) {
	t.Helper()
	g := newLocalGroup(n)
	res := make([]Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r := 0; r < n; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.compute.Lock()
			defer g.compute.Unlock()
			c := cfg
			c.Run.Dir = rankDir(cfg.Run.Dir, r)
			ctx := context.Background()
			if ctxs != nil {
				ctx = ctxs[r]
			}
			var hook func(int) (string, float32)
			if inject != nil {
				hook = func(step int) (string, float32) { return inject(r, step) }
			}
			res[r], errs[r] = runWith(ctx, c, Options{Backend: cpu.New(), Dataset: ds, ResumeFrom: resumeFrom,
				Collective: &localRank{g: g, r: r}}, hook)
			if errs[r] != nil {
				g.fail(r, errs[r])
			}
		}()
	}
	wg.Wait()
	for r := 1; r < n; r++ {
		if _, err := os.Stat(rankDir(cfg.Run.Dir, r)); !os.IsNotExist(err) {
			t.Errorf("rank %d wrote into its run directory (only rank 0 writes): %v", r, err)
		}
		if errs[r] == nil && (res[r].Step != res[0].Step || res[r].Interrupted != res[0].Interrupted) {
			t.Errorf("rank %d ended at step %d (interrupted %v), rank 0 at %d (%v)", r, res[r].Step, res[r].Interrupted, res[0].Step, res[0].Interrupted)
		}
	}
	return res[0], errs
}

func mustRunRanks(t *testing.T, n int, cfg config.Config, ds data.Dataset, resumeFrom string) Result {
	t.Helper()
	res, errs := runRanks(t, n, cfg, ds, resumeFrom, nil, nil)
	for r, err := range errs {
		if err != nil {
			t.Fatalf("%d ranks: rank %d: %v", n, r, err)
		}
	}
	return res
}

func distConfig(t *testing.T, dir string, overrides ...string) config.Config {
	return testConfig(t, dir, append([]string{"train.batch_size=8", "train.grad_accum=2", "model.dropout=0.1",
		"data.flip=true", "train.max_steps=6", "train.log_every=2", "sample.count=3"}, overrides...)...)
}

// closeStates checks that want (one process) and got (several ranks) are the same run within float tolerance:
// the same counters and data position, every parameter within steps·2·lr·(1+wd) of the other (AdamW moves a weight
// by at most about lr per step), the updates p − p0 and the EMA's to normErr ≤ tol, the AdamW moments to tol.
func closeStates(t *testing.T, cfg config.Config, got, want *checkpoint.State, tol float64) {
	t.Helper()
	if got.Step != want.Step || got.AdamStep != want.AdamStep || got.Data != want.Data {
		t.Fatalf("counters: got step %d adam %d data %+v, want %d %d %+v", got.Step, got.AdamStep, got.Data, want.Step, want.AdamStep, want.Data)
	}
	u, err := model.New(cpu.New(), cfg.Model, cfg.Data.Channels, cfg.Data.ImageSize, 1)
	if err != nil {
		t.Fatal(err)
	}
	u.Init(cfg.Train.Seed)
	p0 := make([]float32, u.NumParams())
	cpu.New().Download(p0, u.Params())
	upd := func(p []float32) []float32 {
		d := make([]float32, len(p))
		for i := range p {
			d[i] = p[i] - p0[i]
		}
		return d
	}
	var worst float64
	for i := range want.Params {
		worst = math.Max(worst, math.Abs(float64(got.Params[i])-float64(want.Params[i])))
	}
	bound := float64(want.Step) * 2 * cfg.Train.LR * (1 + cfg.Train.WeightDecay)
	if !(worst <= bound) {
		t.Errorf("parameters: largest difference %.3g > steps·2·lr·(1+wd) = %.3g", worst, bound)
	}
	for _, c := range []struct {
		name      string
		got, want []float32
	}{{"update p − p0", upd(got.Params), upd(want.Params)}, {"EMA update", upd(got.EMA), upd(want.EMA)},
		{"AdamW m", got.AdamM, want.AdamM}, {"AdamW v", got.AdamV, want.AdamV}} {
		if e := normErr64(c.got, c.want); !(e <= tol) {
			t.Errorf("%s: normalized error %.3g > %g", c.name, e, tol)
		} else {
			t.Logf("%s: normalized error %.3g", c.name, e)
		}
	}
}

func readState(t *testing.T, cfg config.Config, path string) *checkpoint.State {
	t.Helper()
	st, err := checkpoint.Read(path, tinyTableFor(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func sameState(t *testing.T, what string, a, b *checkpoint.State) {
	t.Helper()
	if a.Step != b.Step || a.AdamStep != b.AdamStep || a.Data != b.Data {
		t.Fatalf("%s: counters differ: %d/%d/%+v vs %d/%d/%+v", what, a.Step, a.AdamStep, a.Data, b.Step, b.AdamStep, b.Data)
	}
	for _, c := range []struct {
		name string
		x, y []float32
	}{{"weights", a.Params, b.Params}, {"EMA", a.EMA, b.EMA}, {"AdamW m", a.AdamM, b.AdamM}, {"AdamW v", a.AdamV, b.AdamV}} {
		for i := range c.x {
			if math.Float32bits(c.x[i]) != math.Float32bits(c.y[i]) {
				t.Fatalf("%s: %s element %d: %v vs %v (want bit-identical)", what, c.name, i, c.x[i], c.y[i])
			}
		}
	}
}

// TestDataParallelMatchesOneProcess: 2 and 4 ranks (goroutines) with global batch 8, two micro-batches, dropout and
// flips, train the run one process trains: the same data position and counters, the same losses in metrics.jsonl
// and the same weights, moments and EMA within float tolerance (the sums over the batch are formed in another
// order); rank 0 alone writes, including the sample grid the ranks draw in shares (that the shares are Sample's
// images is sampler's TestSampleRangeSharesAreSample; here the weights differ within tolerance).
func TestDataParallelMatchesOneProcess(t *testing.T) {
	ds := synthetic(64)
	one := distConfig(t, t.TempDir())
	r1 := mustRun(t, one, ds, false)
	m1 := readMetrics(t, one.Run.Dir)
	s1 := readState(t, one, r1.Checkpoint)
	grid1, err := os.ReadFile(r1.Samples)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{2, 4} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			cfg := distConfig(t, t.TempDir())
			rn := mustRunRanks(t, n, cfg, ds, "")
			mn := readMetrics(t, cfg.Run.Dir)
			if len(mn) != len(m1) {
				t.Fatalf("metrics lines: %d ranks %d, one process %d", n, len(mn), len(m1))
			}
			for i := range m1 {
				if mn[i].Step != m1[i].Step || relErr(mn[i].Loss, m1[i].Loss) > 1e-5 || relErr(mn[i].GradNorm, m1[i].GradNorm) > 1e-4 {
					t.Errorf("metrics line %d: %d ranks step %d loss %.7g norm %.7g; one process step %d loss %.7g norm %.7g",
						i, n, mn[i].Step, mn[i].Loss, mn[i].GradNorm, m1[i].Step, m1[i].Loss, m1[i].GradNorm)
				}
			}
			closeStates(t, cfg, readState(t, cfg, rn.Checkpoint), s1, 1e-3)
			grid, err := os.ReadFile(rn.Samples)
			if err != nil {
				t.Fatalf("sample grid: %v", err)
			}
			if _, err := png.Decode(bytes.NewReader(grid)); err != nil {
				t.Errorf("sample grid %s: %v", rn.Samples, err)
			}
			t.Logf("sample grid (drawn in %d shares) equals one process's byte for byte: %v", n, bytes.Equal(grid, grid1))
		})
	}
}

// TestDataParallelIsDeterministic: two 2-rank runs end bit-identical.
func TestDataParallelIsDeterministic(t *testing.T) {
	ds := synthetic(64)
	var st []*checkpoint.State
	for range 2 {
		cfg := distConfig(t, t.TempDir())
		st = append(st, readState(t, cfg, mustRunRanks(t, 2, cfg, ds, "").Checkpoint))
	}
	sameState(t, "two 2-rank runs", st[0], st[1])
}

// TestDataParallelResumeAcrossRankCounts: a checkpoint written by one rank count continues on another: 1 rank to
// step 4, then 2 ranks to 8, is within tolerance of one process to 8 and is the 2-rank continuation (resumed again
// halfway by 2 ranks, bit-identical); and 2 ranks to 4, then 1 rank to 8, is within tolerance too.
func TestDataParallelResumeAcrossRankCounts(t *testing.T) {
	ds := synthetic(64)
	straight := distConfig(t, t.TempDir(), "train.max_steps=8")
	ref := readState(t, straight, mustRun(t, straight, ds, false).Checkpoint)

	// 1 rank to 4, 2 ranks from there to 8.
	a := distConfig(t, t.TempDir(), "train.max_steps=4")
	ck4 := mustRun(t, a, ds, false).Checkpoint
	a.Train.MaxSteps = 8
	a8 := readState(t, a, mustRunRanks(t, 2, a, ds, ck4).Checkpoint)
	closeStates(t, a, a8, ref, 1e-3)
	m := readMetrics(t, a.Run.Dir)
	if len(m) == 0 || m[len(m)-1].Step != 8 {
		t.Errorf("metrics.jsonl does not continue to step 8: %+v", m)
	}

	// The same continuation in two legs on 2 ranks: bit-identical.
	b := distConfig(t, t.TempDir(), "train.max_steps=6")
	ck6 := mustRunRanks(t, 2, b, ds, ck4).Checkpoint
	b.Train.MaxSteps = 8
	sameState(t, "2 ranks 4→8 vs 4→6→8", readState(t, b, mustRunRanks(t, 2, b, ds, ck6).Checkpoint), a8)

	// 2 ranks to 4, 1 rank to 8.
	c := distConfig(t, t.TempDir(), "train.max_steps=4")
	ck := mustRunRanks(t, 2, c, ds, "").Checkpoint
	c.Train.MaxSteps = 8
	res, err := Run(context.Background(), c, Options{Backend: cpu.New(), Dataset: ds, ResumeFrom: ck})
	if err != nil {
		t.Fatal(err)
	}
	closeStates(t, c, readState(t, c, res.Checkpoint), ref, 1e-3)
}

// TestDataParallelWriteFailureStopsEveryRank: a checkpoint write that fails on rank 0 under on_write_error =
// "stop" stops every rank, the others naming rank 0; under "continue" all train on.
func TestDataParallelWriteFailureStopsEveryRank(t *testing.T) {
	ds := synthetic(64)
	failWrites(t, checkpoint.Name(4))
	cfg := distConfig(t, t.TempDir(), "train.checkpoint_every=2")
	_, errs := runRanks(t, 2, cfg, ds, "", nil, nil)
	if errs[0] == nil || !strings.Contains(errs[0].Error(), "no space") {
		t.Errorf("rank 0: %v, want the write error", errs[0])
	}
	if errs[1] == nil || !strings.Contains(errs[1].Error(), "rank 0 stopped the run") {
		t.Errorf("rank 1: %v, want an error naming rank 0", errs[1])
	}
	noTemps(t, checkpoint.Dir(cfg.Run.Dir))

	cfg = distConfig(t, t.TempDir(), "train.checkpoint_every=2", `train.on_write_error="continue"`)
	res := mustRunRanks(t, 2, cfg, ds, "")
	if res.Step != 6 {
		t.Errorf("continue: ended at step %d, want 6", res.Step)
	}
}

// TestDataParallelStopsTogether: a signal seen by one rank only stops every rank after the same step, and rank 0
// checkpoints it.
func TestDataParallelStopsTogether(t *testing.T) {
	ds := synthetic(64)
	cfg := distConfig(t, t.TempDir(), "train.max_steps=1000")
	ctx, cancel := context.WithCancel(context.Background())
	stepSeen := 0
	res, errs := runRanks(t, 2, cfg, ds, "", []context.Context{context.Background(), ctx}, func(rank, step int) (string, float32) {
		if rank == 1 && step == 3 {
			stepSeen = step
			cancel()
		}
		return "", 0
	})
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	if !res.Interrupted || res.Step != 3 || stepSeen != 3 {
		t.Fatalf("rank 0: interrupted %v at step %d; want interrupted after step 3", res.Interrupted, res.Step)
	}
	if filepath.Base(res.Checkpoint) != checkpoint.Name(3) {
		t.Errorf("checkpoint %s, want %s", res.Checkpoint, checkpoint.Name(3))
	}
}

// TestDataParallelDivergenceIsCaught: a rank whose weights differ (a gradient poisoned on rank 1 only) stops every
// rank at the next log step, naming rank 1.
func TestDataParallelDivergenceIsCaught(t *testing.T) {
	ds := synthetic(64)
	cfg := distConfig(t, t.TempDir())
	name := tinyTableFor(t, cfg)[0].Name
	_, errs := runRanks(t, 2, cfg, ds, "", nil, func(rank, step int) (string, float32) {
		if rank == 1 && step == 3 {
			return name, 0.5
		}
		return "", 0
	})
	for r, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "diverged: rank 1") {
			t.Errorf("rank %d: %v, want a divergence error naming rank 1", r, err)
		}
	}
}

// TestDataParallelBuckets: gradients reduced in many buckets during the backward pass (bucketElems lowered to 1000)
// give the run that reducing them in one piece gives, bit for bit: every element is reduced exactly once.
func TestDataParallelBuckets(t *testing.T) {
	ds := synthetic(64)
	whole := distConfig(t, t.TempDir(), "train.max_steps=3")
	want := readState(t, whole, mustRunRanks(t, 2, whole, ds, "").Checkpoint)
	defer func(n int) { bucketElems = n }(bucketElems)
	bucketElems = 1000
	cfg := distConfig(t, t.TempDir(), "train.max_steps=3")
	g := newLocalGroup(2)
	ranks := []*localRank{{g: g, r: 0}, {g: g, r: 1}}
	var wg sync.WaitGroup
	res := make([]Result, 2)
	errs := make([]error, 2)
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.compute.Lock()
			defer g.compute.Unlock()
			c := cfg
			c.Run.Dir = rankDir(cfg.Run.Dir, r)
			res[r], errs[r] = Run(context.Background(), c, Options{Backend: cpu.New(), Dataset: ds, Collective: ranks[r]})
			if errs[r] != nil {
				g.fail(r, errs[r])
			}
		}()
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	P := len(want.Params)
	// A step reduces its loss and its gradient buckets: with buckets of 1000 of 41,609 parameters (layers of up to
	// 9,216), well over 5 buckets per step.
	t.Logf("%d reductions in 3 steps of %d parameters with buckets of 1000", ranks[0].reduces, P)
	if ranks[0].reduces < 3*(1+5) {
		t.Errorf("%d reductions in 3 steps: the gradient went in fewer than 5 buckets per step", ranks[0].reduces)
	}
	sameState(t, "buckets of 1000 vs one piece", readState(t, cfg, res[0].Checkpoint), want)
}
