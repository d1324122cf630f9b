// Package opstest is the conformance suite of ops.Backend: every op, forward and
// backward, run on a backend under test and on a reference backend from the same
// random inputs, and compared. It is the Go shape of ggml's test-backend-ops: the CPU
// backend runs it as float32 against its own float64 build, and the CUDA backend runs it
// against the CPU.
//
// For every case and every buffer an op writes, the suite checks
//   - the normalized error ‖got − ref‖₂ / max(‖ref‖₂, 1e-30) against the case's
//     tolerance (each case states why its tolerance is what it is);
//   - that NaN and ±Inf appear at the same places in both;
//   - guard bands: every buffer is a Slice into a larger allocation whose extra
//     elements on both sides hold a sentinel, which must be untouched afterwards;
//   - that inputs are left unchanged, and that forward outputs are overwritten (they
//     start as NaN and must hold no NaN afterwards, so an op that skips an element, reads
//     its output or accumulates into it shows up);
//     backward gradients start from random values, so the += convention is checked.
//
// A case with tolerance 0 must match bit for bit (RNG draws, memory moves).
//
// Coverage: Uncovered lists the ops.Backend methods that no case exercises, and Run
// fails when it is not empty, so adding a method to ops.Backend without a case breaks
// the build's tests.
//
// Every backend runs the same table (Cases); a backend adapts it only through Options:
// Only to run a part of it (the convolutions again in another mode), MinTol for a mode
// of lower precision (TF32 tensor cores). A new op or capability gets its cases in
// Cases, so that every backend runs them.
package opstest

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand"
	"reflect"
	"slices"
	"testing"

	"github.com/ddpmgo/ddpm/ops"
)

// Case is one conformance check.
type Case struct {
	Name    string
	Methods []string       // the ops.Backend methods it exercises (for the coverage check)
	Tol     float64        // largest normalized error allowed on each output; 0: bit for bit
	Why     string         // the reason for Tol
	BF16    *BF16Band      // the tolerance at precision bf16 against FP32 (option BF16); nil: the op does not change
	Conv    *ops.ConvShape // the shape of a convolution case, for options that depend on it
	Run     func(e *Env)

	outTol func(output string) (tol float64, why string, ok bool) // option PerOutput
}

// Guard is the number of sentinel elements on each side of every buffer the suite
// allocates, and Sentinel their value (exact in float32 and float64).
const (
	Guard    = 19
	Sentinel = float32(-1.2345e30)
)

// Env is what a case runs against: one backend, a random source seeded by the case
// name (so the got and ref runs see the same inputs), and the buffers it made.
type Env struct {
	B    ops.Backend
	errs *[]string // failures, shared by the got and ref runs of a case
	rnd  *rand.Rand
	bufs []*tracked
	host []hostResult
}

type kind int

const (
	input  kind = iota // must be unchanged
	output             // starts NaN, compared
	accum              // starts from given values, compared
)

type tracked struct {
	name   string
	kind   kind
	parent ops.Buf
	init   []float32
}

type hostResult struct {
	name string
	data []float32
}

func newEnv(errs *[]string, b ops.Backend, name string) *Env {
	h := fnv.New64a()
	h.Write([]byte(name))
	return &Env{B: b, errs: errs, rnd: rand.New(rand.NewSource(int64(h.Sum64())))}
}

// Randn returns n normal draws times scale.
func (e *Env) Randn(n int, scale float32) []float32 {
	d := make([]float32, n)
	for i := range d {
		d[i] = float32(e.rnd.NormFloat64()) * scale
	}
	return d
}

// Uniform returns n draws from [lo, hi).
func (e *Env) Uniform(n int, lo, hi float32) []float32 {
	d := make([]float32, n)
	for i := range d {
		d[i] = lo + (hi-lo)*e.rnd.Float32()
	}
	return d
}

func (e *Env) alloc(name string, k kind, init []float32) ops.Buf {
	n := len(init)
	full := make([]float32, n+2*Guard)
	for i := range full {
		full[i] = Sentinel
	}
	copy(full[Guard:], init)
	parent := e.B.Alloc(n + 2*Guard)
	e.B.Upload(parent, full)
	view := e.B.Slice(parent, Guard, n)
	e.bufs = append(e.bufs, &tracked{name: name, kind: k, parent: parent, init: slices.Clone(init)})
	return view
}

// In returns a guarded buffer holding data, which the op must not change.
func (e *Env) In(name string, data []float32) ops.Buf { return e.alloc(name, input, data) }

// Out returns a guarded output buffer of n elements, filled with NaN; the op must
// overwrite it. It is compared with the reference.
func (e *Env) Out(name string, n int) ops.Buf {
	d := make([]float32, n)
	for i := range d {
		d[i] = float32(math.NaN())
	}
	return e.alloc(name, output, d)
}

// Acc returns a guarded buffer holding init that the op updates in place (a gradient
// accumulated with +=, an optimizer state, an in-place operand). It is compared.
func (e *Env) Acc(name string, init []float32) ops.Buf { return e.alloc(name, accum, init) }

// Record adds a host-side result (e.g. a Download) to the comparison.
func (e *Env) Record(name string, data []float32) {
	e.host = append(e.host, hostResult{name, slices.Clone(data)})
}

// Errorf reports a failure that the case found by itself.
func (e *Env) Errorf(format string, args ...any) {
	*e.errs = append(*e.errs, fmt.Sprintf("%s: "+format, append([]any{e.B.Name()}, args...)...))
}

func (e *Env) download(b ops.Buf) []float32 {
	d := make([]float32, b.Len())
	e.B.Download(d, b)
	return d
}

// finish syncs, checks guards and inputs, and returns the compared results by name.
func (e *Env) finish() []hostResult {
	if err := e.B.Sync(); err != nil {
		e.Errorf("Sync: %v", err)
	}
	var res []hostResult
	for _, b := range e.bufs {
		full := e.download(b.parent)
		n := len(b.init)
		for i := 0; i < Guard; i++ {
			for _, j := range []int{i, Guard + n + i} {
				if full[j] != Sentinel {
					side, at := "before", Guard-i
					if j > Guard {
						side, at = "after", i+1
					}
					e.Errorf("guard band of %s (%d elements) overwritten %d element(s) %s it: %g",
						b.name, n, at, side, full[j])
				}
			}
		}
		body := full[Guard : Guard+n]
		switch b.kind {
		case input:
			for i := range body {
				if math.Float32bits(body[i]) != math.Float32bits(b.init[i]) {
					e.Errorf("input %s changed at %d: %g -> %g", b.name, i, b.init[i], body[i])
					break
				}
			}
		case output:
			for i, v := range body {
				if v != v {
					e.Errorf("output %s (%d elements) not written at %d", b.name, n, i)
					break
				}
			}
			res = append(res, hostResult{b.name, body})
		default:
			res = append(res, hostResult{b.name, body})
		}
	}
	for _, b := range e.bufs {
		e.B.Free(b.parent)
	}
	return append(res, e.host...)
}

// Compare returns the normalized error ‖got − ref‖₂ / max(‖ref‖₂, 1e-30) over the
// finite elements, and an error if NaN or ±Inf appear at different places (or the
// lengths differ).
func Compare(got, ref []float32) (float64, error) {
	if len(got) != len(ref) {
		return math.Inf(1), fmt.Errorf("length %d, reference %d", len(got), len(ref))
	}
	var num, den float64
	for i := range ref {
		g, r := float64(got[i]), float64(ref[i])
		gn, rn := math.IsNaN(g), math.IsNaN(r)
		gi, ri := math.IsInf(g, 0), math.IsInf(r, 0)
		switch {
		case gn != rn || gi != ri || (gi && g != r):
			return math.Inf(1), fmt.Errorf("element %d is %g, reference %g", i, g, r)
		case gn || gi:
			continue
		}
		num += (g - r) * (g - r)
		den += r * r
	}
	return math.Sqrt(num) / max(math.Sqrt(den), 1e-30), nil
}

// An Option adapts the table of cases to a backend: it may adjust a case (return it
// changed) or drop it (return false).
type Option func(c *Case) bool

// Only keeps the cases for which keep is true.
func Only(keep func(Case) bool) Option {
	return func(c *Case) bool { return keep(*c) }
}

// Uses is a filter for Only: the cases that exercise any of methods.
func Uses(methods ...string) func(Case) bool {
	return func(c Case) bool {
		return slices.ContainsFunc(c.Methods, func(m string) bool { return slices.Contains(methods, m) })
	}
}

// MinTol raises every case's tolerance to at least tol, giving why as the reason: for a
// mode of the backend under test that is less precise by design.
func MinTol(tol float64, why string) Option {
	return func(c *Case) bool {
		if c.Tol < tol {
			c.Tol, c.Why = tol, why
		}
		return true
	}
}

// PerOutput sets the tolerance of single outputs: where tol returns ok for a case and an output's name, that
// output is held to its tolerance and reason instead of the case's.
func PerOutput(tol func(c Case, output string) (float64, string, bool)) Option {
	return func(c *Case) bool {
		cc := *c
		c.outTol = func(o string) (float64, string, bool) { return tol(cc, o) }
		return true
	}
}

// Select returns the cases of Cases that opts keep, as opts adjust them.
func Select(opts ...Option) []Case {
	var cs []Case
next:
	for _, c := range Cases() {
		for _, o := range opts {
			if !o(&c) {
				continue next
			}
		}
		cs = append(cs, c)
	}
	return cs
}

// Run runs the cases of Select(opts...) on got and on ref and compares them; see the
// package comment for what it checks. It fails if a method of ops.Backend has no case
// in Cases, or if opts keep no case.
func Run(t *testing.T, got, ref ops.Backend, opts ...Option) {
	if u := Uncovered(Cases()); len(u) > 0 {
		t.Errorf("ops.Backend methods without a conformance case: %v", u)
	}
	cs := Select(opts...)
	if len(cs) == 0 {
		t.Fatal("the options keep no case")
	}
	for _, c := range cs {
		t.Run(c.Name, func(t *testing.T) { RunCase(t, c, got, ref) })
	}
}

// RunCase runs one case on got and ref and compares every output.
func RunCase(t *testing.T, c Case, got, ref ops.Backend) {
	t.Helper()
	report, fails := Check(c, got, ref)
	for _, r := range report {
		t.Log(r)
	}
	for _, f := range fails {
		t.Error(f)
	}
}

// Check runs one case on ref and then on got and returns a line per compared output
// (its normalized error) and the failures. A panic in either backend is a failure.
func Check(c Case, got, ref ops.Backend) (report, failures []string) {
	var rr, rg []hostResult
	for _, side := range []struct {
		b   ops.Backend
		res *[]hostResult
	}{{ref, &rr}, {got, &rg}} {
		func() {
			defer func() {
				if p := recover(); p != nil {
					failures = append(failures, fmt.Sprintf("%s panicked: %v", side.b.Name(), p))
				}
			}()
			e := newEnv(&failures, side.b, c.Name)
			c.Run(e)
			*side.res = e.finish()
		}()
	}
	if len(failures) > 0 {
		return report, failures
	}
	if len(rr) != len(rg) {
		return report, append(failures, fmt.Sprintf("%d results on %s, %d on %s", len(rg), got.Name(), len(rr), ref.Name()))
	}
	for i := range rr {
		c := c
		if c.outTol != nil {
			if tol, why, ok := c.outTol(rr[i].name); ok {
				c.Tol, c.Why = tol, why
			}
		}
		if c.Tol == 0 {
			if bad := bitDiff(rg[i].data, rr[i].data); bad != nil {
				failures = append(failures, fmt.Sprintf("%s: %s vs %s: %v (must be bit for bit: %s)", rr[i].name, got.Name(), ref.Name(), bad, c.Why))
			} else {
				report = append(report, fmt.Sprintf("%s: bit for bit", rr[i].name))
			}
			continue
		}
		err, bad := Compare(rg[i].data, rr[i].data)
		switch {
		case bad != nil:
			failures = append(failures, fmt.Sprintf("%s: %s vs %s: %v", rr[i].name, got.Name(), ref.Name(), bad))
		case !(err <= c.Tol):
			failures = append(failures, fmt.Sprintf("%s: normalized error %.3g > tolerance %.3g (%s)", rr[i].name, err, c.Tol, c.Why))
		default:
			report = append(report, fmt.Sprintf("%s: normalized error %.3g (tolerance %.3g)", rr[i].name, err, c.Tol))
		}
	}
	return report, failures
}

// bitDiff describes the first element where got and ref differ in their bits, or
// their lengths; nil if they are identical.
func bitDiff(got, ref []float32) error {
	if len(got) != len(ref) {
		return fmt.Errorf("length %d, reference %d", len(got), len(ref))
	}
	for i := range ref {
		if math.Float32bits(got[i]) != math.Float32bits(ref[i]) {
			return fmt.Errorf("element %d is %g (%#08x), reference %g (%#08x)", i, got[i], math.Float32bits(got[i]), ref[i], math.Float32bits(ref[i]))
		}
	}
	return nil
}

// capabilities are the optional interfaces of the op set beside ops.Backend; their methods count as Type.Method.
var capabilities = []reflect.Type{
	reflect.TypeOf((*ops.StepController)(nil)).Elem(), reflect.TypeOf((*ops.StepControl)(nil)).Elem(),
	reflect.TypeOf((*ops.Feeder)(nil)).Elem(), reflect.TypeOf((*ops.Feed)(nil)).Elem(),
	reflect.TypeOf((*ops.ConvInputKeeper)(nil)).Elem(),
}

// Methods lists the methods of ops.Backend, and those of the capabilities as Type.Method.
func Methods() []string {
	it := reflect.TypeOf((*ops.Backend)(nil)).Elem()
	m := make([]string, it.NumMethod())
	for i := range m {
		m[i] = it.Method(i).Name
	}
	for _, c := range capabilities {
		for i := 0; i < c.NumMethod(); i++ {
			m = append(m, c.Name()+"."+c.Method(i).Name)
		}
	}
	return m
}

// Uncovered lists the methods of ops.Backend that no case names, and names that are
// not methods of ops.Backend (a typo would otherwise cover nothing).
func Uncovered(cases []Case) []string {
	have := map[string]bool{}
	for _, c := range cases {
		for _, m := range c.Methods {
			have[m] = true
		}
	}
	var out []string
	all := Methods()
	for _, m := range all {
		if !have[m] {
			out = append(out, m)
		}
	}
	for m := range have {
		if !slices.Contains(all, m) {
			out = append(out, "not a method: "+m)
		}
	}
	slices.Sort(out)
	return out
}
