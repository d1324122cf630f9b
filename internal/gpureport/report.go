// Package gpureport judges the CUDA kernels' device speed without a GPU, from the code the GPU would run: every PTX
// module of kernels/ptx compiled by ptxas for sm_80 and sm_90, its SASS read back with cuobjdump, per kernel the
// registers, spills, shared memory, theoretical occupancy and the instruction mix of the main loop; then a roofline
// of the celeba32 training step on an H100 from the step's launch list (traced over a driver that runs nothing) with
// each launch's FLOPs and bytes (work.go). cmd/gpureport writes docs/gpu-perf.md with it (make gpu-report).
package gpureport

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/ddpmgo/ddpm/config"
)

// Options configure a report.
type Options struct {
	Root     string // repository root
	Tools    Tools
	Machine  Machine
	Config   string // the step's config, relative to Root
	Batches  []int
	Baseline string // optional: key numbers of an earlier state (relative to Root), shown beside today's
}

// DefaultOptions are those of make gpu-report.
func DefaultOptions(root string) Options {
	return Options{Root: root, Tools: Tools{Ptxas: "ptxas", Nvdisasm: "nvdisasm", Cuobjdump: "cuobjdump"}, Machine: H100,
		Config: "configs/celeba32.toml", Batches: []int{64, 256}, Baseline: "docs/gpu-perf-baseline.tsv"}
}

// step is one traced training step with its costs.
type step struct {
	batch int
	prec  Precision
	err   error // why there is no trace (a precision without kernels)
	ls    []Launch
	work  []Work
	est   []Estimate
}

func (s *step) kernels() (n int) {
	for _, l := range s.ls {
		if !l.IsDriverOp() {
			n++
		}
	}
	return n
}

func (s *step) sum(f func(i int) float64) (t float64) {
	for i := range s.ls {
		t += f(i)
	}
	return t
}

// deviceTime is Σ of the launches' times; estimate adds the launch floor launch by launch: Σ max(t_i, floor).
func (s *step) deviceTime() float64 { return s.sum(func(i int) float64 { return s.est[i].Time }) }
func (s *step) estimate(floor float64) float64 {
	return s.sum(func(i int) float64 { return max(s.est[i].Time, floor) })
}

// Report is a generated report: its Markdown and its key numbers (the baseline file's format).
type Report struct {
	Markdown string
	Metrics  []Metric
}

// Metric is one key number, named for the baseline file.
type Metric struct {
	Key   string
	Value float64
	Unit  string
}

// Generate compiles, traces and costs everything and renders docs/gpu-perf.md.
func Generate(o Options) (Report, error) {
	mods, err := FindModules(o.Root)
	if err != nil {
		return Report{}, err
	}
	ks, err := Compile(o.Root, mods, Archs, o.Tools)
	if err != nil {
		return Report{}, err
	}
	version, err := o.Tools.Version()
	if err != nil {
		return Report{}, err
	}
	src, err := os.ReadFile(filepath.Join(o.Root, filepath.FromSlash(o.Config)))
	if err != nil {
		return Report{}, err
	}
	loaded := Resolve(ks, o.Machine.Arch.SM)
	var steps []*step
	for _, b := range o.Batches {
		cfg, err := config.Parse(o.Config, src, []string{fmt.Sprintf("train.batch_size=%d", b)})
		if err != nil {
			return Report{}, err
		}
		for _, p := range Precisions {
			s := &step{batch: b, prec: p}
			steps = append(steps, s)
			if p.Setup == nil {
				s.err = fmt.Errorf("package cuda has no %s kernels", strings.ToUpper(p.Name))
				continue
			}
			if s.ls, err = RecordStep(cfg, p, 0); err != nil {
				return Report{}, fmt.Errorf("%s at batch %d, %s: %w", o.Config, b, p.Name, err)
			}
			for _, l := range s.ls {
				w, err := WorkOf(l)
				if err != nil {
					return Report{}, err
				}
				var kp *Kernel
				if k, ok := loaded[l.Kernel]; ok {
					kp = &k
				} else if !l.IsDriverOp() {
					return Report{}, fmt.Errorf("%s is launched but no PTX module has it", l.Kernel)
				}
				e, err := o.Machine.Estimate(l, w, kp)
				if err != nil {
					return Report{}, err
				}
				s.work, s.est = append(s.work, w), append(s.est, e)
			}
		}
	}
	r := &renderer{o: o, ks: ks, mods: mods, steps: steps, loaded: loaded, version: version}
	r.threads = r.blockSizes()
	var base map[string]float64
	if o.Baseline != "" {
		base, err = ReadBaseline(filepath.Join(o.Root, filepath.FromSlash(o.Baseline)))
		if err != nil && !os.IsNotExist(err) {
			return Report{}, err
		}
	}
	md, ms, err := r.render(base)
	return Report{Markdown: md, Metrics: ms}, err
}

type renderer struct {
	o       Options
	ks      []Kernel
	mods    []Module
	steps   []*step
	loaded  map[string]Kernel
	version string
	threads map[string]threadsOf
	b       strings.Builder
}

type threadsOf struct {
	n    int
	how  string // "step", "bounds", "assumed"
	smem int    // the largest dynamic shared memory it is launched with in the traced steps, bytes
}

// blockSizes: the block a kernel is launched with in the traced steps (the largest seen), else its
// __launch_bounds__, else 256 (the launchers' elementwise block).
func (r *renderer) blockSizes() map[string]threadsOf {
	out := map[string]threadsOf{}
	for _, s := range r.steps {
		for _, l := range s.ls {
			if t := l.Threads(); !l.IsDriverOp() && t > out[l.Kernel].n {
				out[l.Kernel] = threadsOf{t, "step", out[l.Kernel].smem}
			}
			if t := out[l.Kernel]; !l.IsDriverOp() && l.Smem > t.smem {
				t.smem = l.Smem
				out[l.Kernel] = t
			}
		}
	}
	for _, k := range r.ks {
		if _, ok := out[k.Name]; !ok && k.MaxNTID > 0 {
			out[k.Name] = threadsOf{k.MaxNTID, "bounds", 0}
		}
	}
	for _, k := range r.ks {
		if _, ok := out[k.Name]; !ok {
			out[k.Name] = threadsOf{256, "assumed", 0}
		}
	}
	return out
}

func (r *renderer) p(format string, a ...any) { fmt.Fprintf(&r.b, format, a...) }

func (r *renderer) render(base map[string]float64) (string, []Metric, error) {
	r.p("# GPU kernels on paper: SASS, occupancy and a roofline of the celeba32 step\n\n")
	r.p("Generated by `make gpu-report` (`cmd/gpureport`, package `internal/gpureport`) from the committed PTX and the\n")
	r.p("launchers; do not edit by hand. `make gpu-report-check` (CI) regenerates it and fails when it differs. No GPU\n")
	r.p("ran any of this: every time below is **on paper**, a bound computed from the SASS and the datasheet.\n\n")
	r.p("Toolkit: ptxas and nvdisasm, CUDA %s.\n\n", r.version)

	r.p("## How the numbers are made\n\n")
	r.p("- **SASS.** Every module (`kernels/ptx/*.ptx`, compute_70; `kernels/ptx/sm80/*.ptx`, compute_80) is compiled by\n")
	r.p("  `ptxas -arch=sm_80 -v` and `-arch=sm_90 -v` (registers, stack, spills, static shared memory), and its cubin\n")
	r.p("  disassembled by `nvdisasm -c` (the SASS that `cuobjdump -sass` prints; by `cuobjdump -sass` itself for a\n")
	r.p("  cubin whose nvdisasm listing branches to a label it does not print). A device of compute capability ≥ 8.0\n")
	r.p("  loads `kernels/ptx/sm80/*.ptx` over the compute_70 modules (`cuda/cu.go`), so the roofline costs those\n")
	r.p("  versions of the conv2d kernels.\n")
	r.p("- **Main loop.** The innermost loop (the address range of a backward branch that contains no other) with the\n")
	r.p("  most tensor-core MMAs, then FFMAs, then instructions; a function without a loop is counted whole. In a tiled\n")
	r.p("  GEMM that is the k-loop (the k-steps inside it are unrolled), not the epilogue's store loops. Counts are\n")
	r.p("  static, each instruction of the range once, both sides of its forward branches included: these loops branch\n")
	r.p("  forward only around bounds checks and the next tile's prefetch, which run on almost every iteration.\n")
	r.p("- **Classes.** MMA = HMMA/IMMA/DMMA and sm_90 GMMAs; FFMA; FP other = FADD, FMUL, MUFU, float compares and\n")
	r.p("  conversions; int/addr = integer and address arithmetic, moves, predicates, constant and special-register\n")
	r.p("  reads, I2F/F2I (the integer divisions of the im2col indexing), HFMA2.MMA (a move idiom); LDS/LDSM; STS;\n")
	r.p("  LDG (global and texture loads, LDGSTS); STG (stores, reductions, atomics); local = LDL/STL (spills);\n")
	r.p("  BAR = barriers and fences; ctl = branches, BSSY/BSYNC, EXIT, NOP.\n")
	r.p("- **Occupancy** as `cudaOccMaxActiveBlocksPerMultiprocessor` computes it, with the limits below, for the block\n")
	r.p("  the kernel is launched with in the celeba32 step (else its `__launch_bounds__`, else 256, marked `*`) and\n")
	r.p("  no dynamic shared memory (none of the launchers asks for any).\n\n")

	r.p("| per SM | %s | %s |\n|---|---:|---:|\n", SM80.Name, SM90.Name)
	row := func(name string, f func(a Arch) string) { r.p("| %s | %s | %s |\n", name, f(SM80), f(SM90)) }
	row("registers (allocated per warp in units of)", func(a Arch) string { return fmt.Sprintf("%d (%d)", a.Regs, a.RegUnit) })
	row("register file split between schedulers", func(a Arch) string { return strconv.Itoa(a.SubPartitions) })
	row("threads / warps / blocks", func(a Arch) string { return fmt.Sprintf("%d / %d / %d", a.Threads, a.Warps, a.Blocks) })
	row("shared memory per SM / per block", func(a Arch) string {
		return fmt.Sprintf("%d KiB / %d KiB", a.Smem>>10, a.SmemPerBlock>>10)
	})
	row("shared memory reserved per block, granularity", func(a Arch) string {
		return fmt.Sprintf("%d B, %d B", a.SmemReserved, a.SmemUnit)
	})
	r.p("\n")

	if err := r.kernelTables(); err != nil {
		return "", nil, err
	}
	ms, err := r.roofline()
	if err != nil {
		return "", nil, err
	}
	tm, err := r.targets()
	if err != nil {
		return "", nil, err
	}
	ms = append(ms, tm...)
	r.baseline(base, ms)
	return r.b.String(), ms, nil
}

// smemString is a kernel's static shared memory, and the dynamic shared memory its launches take when they do.
func smemString(static, dynamic int) string {
	if dynamic > 0 {
		return fmt.Sprintf("%d + %d", static, dynamic)
	}
	return fmt.Sprint(static)
}

func pct(x float64) string { return fmt.Sprintf("%.0f%%", 100*x) }

func (r *renderer) occ(k Kernel, a Arch) (Occupancy, string) {
	t := r.threads[k.Name]
	o, err := a.Occupancy(t.n, k.Res.Regs, k.Res.Smem+t.smem)
	if err != nil {
		return o, "does not fit: " + err.Error()
	}
	return o, fmt.Sprintf("%d / %d / %s %s", o.Blocks, o.Warps, pct(o.Fraction(a)), o.Limiter)
}

func (r *renderer) kernelTables() error {
	by := map[string]map[int]Kernel{} // module+name → SM → kernel
	var keys []string
	for _, k := range r.ks {
		key := k.Module + "\x00" + k.Name
		if by[key] == nil {
			by[key] = map[int]Kernel{}
			keys = append(keys, key)
		}
		by[key][k.SM] = k
	}
	r.p("## Kernels: registers, spills, shared memory, occupancy\n\n")
	r.p("Occupancy: resident blocks / warps per SM / share of the SM's %d warps, and the limits that bind. Spills:\n", SM90.Warps)
	r.p("bytes of spill stores + loads on sm_80 / sm_90. `loaded on sm_80+`: no when `kernels/ptx/sm80` overrides it.\n\n")
	r.p("| module | kernel | threads | regs sm_80 / sm_90 | spills | static (+ dynamic) smem | occupancy sm_80 | occupancy sm_90 | loaded on sm_80+ |\n")
	r.p("|---|---|---:|---:|---:|---:|---|---|---|\n")
	for _, key := range keys {
		a, b := by[key][80], by[key][90]
		t := r.threads[a.Name]
		star := ""
		if t.how == "assumed" {
			star = "*"
		}
		_, oa := r.occ(a, SM80)
		_, ob := r.occ(b, SM90)
		used := "yes"
		if l, ok := r.loaded[b.Name]; !ok || l.Module != b.Module {
			used = "no"
		}
		r.p("| %s | %s | %d%s | %d / %d | %d / %d | %s | %s | %s | %s |\n", strings.TrimPrefix(a.Module, "kernels/ptx/"),
			a.Name, t.n, star, a.Res.Regs, b.Res.Regs, a.Res.SpillStores+a.Res.SpillLoads,
			b.Res.SpillStores+b.Res.SpillLoads, smemString(a.Res.Smem, t.smem), oa, ob, used)
	}
	r.p("\n## Kernels: main-loop instruction mix\n\n")
	r.p("sm_90 SASS, share of the main loop's instructions per class (see above); `math sm_80` is the MMA + FFMA\n")
	r.p("share of the sm_80 SASS. `loop` is the main loop's address range, `whole` a function without a loop.\n\n")
	r.p("| module | kernel | loop (sm_90) | instrs | MMA | FFMA | FP other | int/addr | LDS | STS | LDG | STG | local | BAR | ctl + other | math sm_80 |\n")
	r.p("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, key := range keys {
		a, b := by[key][80], by[key][90]
		loop := "whole"
		if b.InLoop {
			loop = fmt.Sprintf("%#x–%#x", b.Loop.Start, b.Loop.End)
		}
		x := b.Mix
		r.p("| %s | %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			strings.TrimPrefix(b.Module, "kernels/ptx/"), b.Name, loop, x.Total, pct(x.Share(CatMMA)), pct(x.Share(CatFFMA)),
			pct(x.Share(CatFP)), pct(x.Share(CatInt)), pct(x.Share(CatLDS)), pct(x.Share(CatSTS)), pct(x.Share(CatLDG)),
			pct(x.Share(CatSTG)), pct(x.Share(CatLocal)), pct(x.Share(CatBar)), pct(x.Share(CatCtl)+x.Share(CatOther)),
			pct(a.Mix.Share(CatMMA)+a.Mix.Share(CatFFMA)))
	}
	r.p("\n")
	return nil
}

// family is a kernel name without its precision suffix: conv2d_fwd_f32 and conv2d_fwd_tf32 are conv2d_fwd.
func family(kernel string) string {
	for _, s := range []string{"_tf32", "_bf16", "_f16", "_f32"} {
		if strings.HasSuffix(kernel, s) {
			return strings.TrimSuffix(kernel, s)
		}
	}
	return kernel
}

func ms(s float64) string {
	switch {
	case s >= 1e-3:
		return fmt.Sprintf("%.2f", 1e3*s)
	default:
		return fmt.Sprintf("%.3f", 1e3*s)
	}
}

func (r *renderer) roofline() ([]Metric, error) {
	m := r.o.Machine
	r.p("## The celeba32 training step on an %s, on paper\n\n", m.Name)
	r.p("Figures used: %d SMs; dense FP32 (FFMA) %.0f TFLOP/s, TF32 tensor cores %.0f TFLOP/s, BF16 tensor cores %.0f\n",
		m.SMs, m.FP32/1e12, m.TF32/1e12, m.BF16/1e12)
	r.p("TFLOP/s; HBM3 %.2f TB/s; a launch-overhead floor of %.0f µs per kernel launch or fill. The launch lists are\n",
		m.HBM/1e12, m.Launch*1e6)
	r.p("traced from `%s` over a driver that runs nothing (`train.TraceStep`: one steady-state step: batch gather,\n", r.o.Config)
	r.p("forward, loss, backward, gradient norm, AdamW, EMA); fp32 runs the default kernels, tf32 those of\n")
	r.p("`device.tensor_cores = true`. Each launch is costed by `internal/gpureport/roofline.go`:\n\n")
	r.p("- memory: its least DRAM traffic (`work.go`: each input read once, each output written once, accumulated\n")
	r.p("  outputs read and written; bf16's packed convolution operands are bfloat16, 2 bytes an element) at HBM\n")
	r.p("  speed, scaled by min(1, blocks / SMs);\n")
	r.p("- compute, tiled GEMM kernels (the implicit-GEMM convolutions `conv2d_igemm_*`, `conv2d_wgrad_*` with\n")
	r.p("  BM×%d tiles, BM = 64 or 128; the GEMMs `gemm_f32` and, at bf16, `gemm_bf16` with %dx%d tiles): the\n", 128, tile64.BM, tile64.BN)
	r.p("  multiply-adds their tiles execute (M, N, K rounded up to the tile, channels packed as `cuda.convChannels`\n")
	r.p("  pads them: to 4 floats at fp32; at tf32 and bf16 to 8 floats or 16 bfloat16 and a kernel row of K ≥ 2 to at\n")
	r.p("  least a k-step; bf16 backward-weight's x to 64 channels, `cuda.wgradCp`; the zero taps of strided\n")
	r.p("  backward-data and each split-K chunk's last k-step included), issued\n")
	r.p("  at the main loop's measured share of math instructions, one warp instruction per scheduler per cycle (%.2f G\n", m.IssueRate()/1e9)
	r.p("  warp instructions/s per SM, the FP32 peak's issue rate), in waves of SMs × resident blocks per SM (sm_90\n")
	r.p("  occupancy), a wave running at min(1, resident warps / %d) of that rate, and never faster than the math pipe's\n", m.SatWarps)
	r.p("  peak (a TF32 HMMA.1684 does 512 multiply-adds: the TF32 peak needs %.0f%% of the issue slots; a BF16\n",
		100*m.TF32/1024/(m.IssueRate()*float64(m.SMs)))
	r.p("  HMMA.16816 2048: the BF16 peak needs %.0f%%; an FFMA 32: the FP32 peak needs 100%%);\n",
		100*m.BF16/4096/(m.IssueRate()*float64(m.SMs)))
	r.p("- compute, other kernels: their nominal FLOPs at the FP32 peak (they are bound by memory);\n")
	r.p("- a launch takes max(compute, memory); the step estimate is Σ max(launch time, %.0f µs).\n\n", m.Launch*1e6)
	r.p("mma.sync on sm_90 does not reach the datasheet's tensor peak (that needs wgmma), so the compute side of the\n")
	r.p("tensor-core figures is optimistic; so is the memory side (least traffic, full bandwidth).\n\n")

	var out []Metric
	r.p("### Totals\n\n")
	r.p("| batch | precision | kernel launches + driver fills/copies | GFLOP | GFLOP issued by tiles | GB | Σ launch times, ms on paper | launch floor, ms | estimate, ms on paper | images/s on paper |\n")
	r.p("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range r.steps {
		key := fmt.Sprintf("b%d_%s", s.batch, s.prec.Name)
		if s.err != nil {
			r.p("| %d | %s | n/a: %v | | | | | | | |\n", s.batch, s.prec.Name, s.err)
			continue
		}
		k := s.kernels()
		fl := s.sum(func(i int) float64 { return s.work[i].FLOPs })
		is := s.sum(func(i int) float64 { return 2 * s.work[i].FMAs })
		by := s.sum(func(i int) float64 { return s.work[i].Bytes })
		est := s.estimate(m.Launch)
		r.p("| %d | %s | %d + %d | %.1f | %.1f | %.2f | %s | %s | %s | %.0f |\n", s.batch, s.prec.Name, k, len(s.ls)-k,
			fl/1e9, is/1e9, by/1e9, ms(s.deviceTime()), ms(float64(len(s.ls))*m.Launch), ms(est), float64(s.batch)/est)
		out = append(out, Metric{key + "_estimate_ms", 1e3 * est, "ms"}, Metric{key + "_launches", float64(len(s.ls)), ""})
	}
	r.p("\n")

	for _, b := range r.o.Batches {
		var row []*step
		for _, s := range r.steps {
			if s.batch == b {
				row = append(row, s)
			}
		}
		r.familyTable(b, row)
	}
	return out, nil
}

type famAgg struct {
	launches       int
	flops, bytes   float64
	time, estimate float64
	compute        int
}

func (r *renderer) familyTable(batch int, steps []*step) {
	floor := r.o.Machine.Launch
	aggs := make([]map[string]*famAgg, len(steps))
	names := map[string]bool{}
	for j, s := range steps {
		aggs[j] = map[string]*famAgg{}
		for i, l := range s.ls {
			f := family(l.Kernel)
			names[f] = true
			a := aggs[j][f]
			if a == nil {
				a = &famAgg{}
				aggs[j][f] = a
			}
			a.launches++
			a.flops += s.work[i].FLOPs
			a.bytes += s.work[i].Bytes
			a.time += s.est[i].Time
			a.estimate += max(s.est[i].Time, floor)
			if s.est[i].Bound() == "compute" {
				a.compute++
			}
		}
	}
	var fams []string
	for f := range names {
		fams = append(fams, f)
	}
	// Largest first by the first precision's estimate, then by name.
	est := func(f string) float64 {
		if a := aggs[0][f]; a != nil {
			return a.estimate
		}
		return 0
	}
	sort.Slice(fams, func(i, j int) bool {
		if ei, ej := est(fams[i]), est(fams[j]); ei != ej {
			return ei > ej
		}
		return fams[i] < fams[j]
	})
	r.p("### Per kernel family, batch %d\n\n", batch)
	r.p("Launches, GFLOP and MB are the fp32 step's (a precision that launches a family a different number of times\n")
	r.p("says so beside them); per precision, the family's Σ max(launch time, floor) in ms on paper and how many of its\n")
	r.p("launches are bound by compute (c) rather than memory. A family is a kernel name without its precision suffix.\n\n")
	r.p("| family | launches | GFLOP | MB |")
	for _, s := range steps {
		r.p(" %s ms on paper (c) |", s.prec.Name)
	}
	r.p("\n|---|---:|---:|---:|")
	for range steps {
		r.p("---:|")
	}
	r.p("\n")
	for _, f := range fams {
		a0 := aggs[0][f]
		if a0 == nil {
			a0 = &famAgg{}
		}
		launches := strconv.Itoa(a0.launches)
		for j, s := range steps[1:] {
			if a := aggs[j+1][f]; s.err == nil && (a == nil || a.launches != a0.launches) {
				n := 0
				if a != nil {
					n = a.launches
				}
				launches += fmt.Sprintf(" (%s: %d)", s.prec.Name, n)
			}
		}
		r.p("| %s | %s | %.2f | %.1f |", f, launches, a0.flops/1e9, a0.bytes/1e6)
		for j, s := range steps {
			a := aggs[j][f]
			switch {
			case s.err != nil:
				r.p(" n/a |")
			case a == nil:
				r.p(" — |")
			default:
				r.p(" %s (%d) |", ms(a.estimate), a.compute)
			}
		}
		r.p("\n")
	}
	r.p("| **total** | | | |")
	for _, s := range steps {
		if s.err != nil {
			r.p(" n/a |")
		} else {
			r.p(" **%s** |", ms(s.estimate(floor)))
		}
	}
	r.p("\n\n")
}

// targets judges the issue's targets from the report's numbers.
func (r *renderer) targets() ([]Metric, error) {
	m := r.o.Machine
	r.p("## Targets (issue 13)\n\n")
	r.p("Judged on the SASS of the kernels an %s loads (sm_90) and on the step at batch %d.\n\n", m.Name, r.o.Batches[len(r.o.Batches)-1])
	r.p("| target | now | met |\n|---|---|---|\n")
	var out []Metric
	yes := func(b bool) string {
		if b {
			return "**met**"
		}
		return "not met"
	}
	// The conv kernels each precision's step launches, as the machine loads them.
	convs := func(tensor bool) []Kernel {
		seen := map[string]bool{}
		var ks []Kernel
		for _, s := range r.steps {
			if s.err != nil || (s.prec.Name != "fp32") != tensor {
				continue
			}
			for i, l := range s.ls {
				if strings.HasPrefix(l.Kernel, "conv2d_") && s.work[i].Tiled && !seen[l.Kernel] {
					seen[l.Kernel] = true
					ks = append(ks, r.loaded[l.Kernel])
				}
			}
		}
		sort.Slice(ks, func(i, j int) bool { return ks[i].Name < ks[j].Name })
		return ks
	}
	// 1. tensor-core conv main loops: ≥ 50 % MMA on sm_90, ≥ 2 resident blocks per SM.
	{
		var parts []string
		ok := true
		tc := convs(true)
		for _, k := range tc {
			o, _ := m.Arch.Occupancy(r.threads[k.Name].n, k.Res.Regs, k.Res.Smem+r.threads[k.Name].smem)
			sh := k.Mix.Share(CatMMA)
			ok = ok && sh >= 0.5 && o.Blocks >= 2
			parts = append(parts, fmt.Sprintf("%s %s MMA, %d blocks/SM", k.Name, pct(sh), o.Blocks))
			out = append(out, Metric{k.Name + "_mma_share_pct", 100 * sh, "%"}, Metric{k.Name + "_blocks_per_sm", float64(o.Blocks), ""})
		}
		if len(tc) == 0 {
			ok = false
			parts = append(parts, "no tensor-core conv kernel in the traced steps")
		}
		r.p("| tensor-core conv main loops ≥ 50%% MMA on sm_90 and ≥ 2 resident blocks/SM | %s | %s |\n",
			strings.Join(parts, "; "), yes(ok))
	}
	// 2. FP32 conv main loops ≥ 75 % FFMA.
	{
		var parts []string
		ok := true
		for _, k := range convs(false) {
			sh := k.Mix.Share(CatFFMA)
			ok = ok && sh >= 0.75
			parts = append(parts, fmt.Sprintf("%s %s", k.Name, pct(sh)))
			out = append(out, Metric{k.Name + "_ffma_share_pct", 100 * sh, "%"})
		}
		r.p("| FP32 conv main loops ≥ 75%% FFMA (sm_90) | %s | %s |\n", strings.Join(parts, "; "), yes(ok))
	}
	// 3. No spills, any module, sm_80 and sm_90.
	{
		var sp []string
		for _, k := range r.ks {
			if k.Res.SpillStores+k.Res.SpillLoads > 0 {
				sp = append(sp, fmt.Sprintf("%s sm_%d (%d B)", k.Name, k.SM, k.Res.SpillStores+k.Res.SpillLoads))
			}
		}
		now := "none in any kernel on sm_80 or sm_90"
		if len(sp) > 0 {
			now = strings.Join(sp, "; ")
		}
		r.p("| no spills | %s | %s |\n", now, yes(len(sp) == 0))
		out = append(out, Metric{"kernels_with_spills", float64(len(sp)), ""})
	}
	// 4. ≤ 400 launches per training step (kernel launches and fills: each costs a submission).
	{
		var parts []string
		ok := true
		for _, s := range r.steps {
			if s.err != nil || s.prec.Name != "fp32" && s.prec.Name != "tf32" {
				continue
			}
			ok = ok && len(s.ls) <= 400
			parts = append(parts, fmt.Sprintf("batch %d %s: %d (%d kernels + %d fills/copies)", s.batch, s.prec.Name, len(s.ls),
				s.kernels(), len(s.ls)-s.kernels()))
		}
		r.p("| ≤ 400 launches per training step (kernels + driver fills/copies) | %s | %s |\n", strings.Join(parts, "; "), yes(ok))
	}
	// 5. celeba32 batch 256 estimate: TF32 ≤ 60 ms, BF16 ≤ 30 ms, launch floor counted.
	last := r.o.Batches[len(r.o.Batches)-1]
	for _, t := range []struct {
		prec  string
		limit float64
	}{{"tf32", 60e-3}, {"bf16", 30e-3}} {
		for _, s := range r.steps {
			if s.batch != last || s.prec.Name != t.prec {
				continue
			}
			if s.err != nil {
				r.p("| celeba32 step at batch %d on an %s ≤ %.0f ms in %s, launch floor counted | n/a: %v | not met |\n",
					last, m.Name, t.limit*1e3, strings.ToUpper(t.prec), s.err)
				continue
			}
			e := s.estimate(m.Launch)
			r.p("| celeba32 step at batch %d on an %s ≤ %.0f ms in %s, launch floor counted | %s ms on paper (%d launches: floor %s ms) | %s |\n",
				last, m.Name, t.limit*1e3, strings.ToUpper(t.prec), ms(e), len(s.ls), ms(float64(len(s.ls))*m.Launch), yes(e <= t.limit))
		}
	}
	r.p("\n")
	return out, nil
}

// baseline prints the key numbers of an earlier state beside today's.
func (r *renderer) baseline(base map[string]float64, now []Metric) {
	if len(base) == 0 {
		return
	}
	r.p("## Before and after\n\n")
	r.p("`%s` holds the key numbers of the kernels before issue 13 (written by `go run ./cmd/gpureport\n", r.o.Baseline)
	r.p("-write-baseline`); times on paper.\n\n")
	r.p("| number | before | now |\n|---|---:|---:|\n")
	seen := map[string]bool{}
	for _, x := range now {
		seen[x.Key] = true
		b, ok := base[x.Key]
		bs := "—"
		if ok {
			bs = fmtMetric(b)
		}
		r.p("| %s | %s | %s |\n", x.Key, bs, fmtMetric(x.Value))
	}
	var gone []string
	for k := range base {
		if !seen[k] {
			gone = append(gone, k)
		}
	}
	sort.Strings(gone)
	for _, k := range gone {
		r.p("| %s | %s | — |\n", k, fmtMetric(base[k]))
	}
	r.p("\n")
}

func fmtMetric(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e9 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// WriteBaseline writes the key numbers, one "key<TAB>value" line each, under a comment.
func WriteBaseline(path, comment string, ms []Metric) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n", comment)
	for _, x := range ms {
		fmt.Fprintf(&b, "%s\t%s\n", x.Key, fmtMetric(x.Value))
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// ReadBaseline reads WriteBaseline's file.
func ReadBaseline(path string) (map[string]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "\t")
		x, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("%s:%d: want key<TAB>number, got %q", path, n, line)
		}
		out[k] = x
	}
	return out, sc.Err()
}
