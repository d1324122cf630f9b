package opstest_test

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/ops/opstest"
)

func TestCoverage(t *testing.T) {
	if u := opstest.Uncovered(opstest.Cases()); len(u) > 0 {
		t.Fatalf("ops.Backend methods without a conformance case: %v", u)
	}
	// The check can fail: drop the cases that cover Transpose.
	var fewer []opstest.Case
	for _, c := range opstest.Cases() {
		if !slices.Contains(c.Methods, "Transpose") {
			fewer = append(fewer, c)
		}
	}
	if u := opstest.Uncovered(fewer); !slices.Contains(u, "Transpose") || !slices.Contains(u, "TransposeBackward") {
		t.Errorf("Uncovered without the Transpose cases = %v, want Transpose and TransposeBackward", u)
	}
	if u := opstest.Uncovered(append(opstest.Cases(), opstest.Case{Methods: []string{"Conv3D"}})); !slices.Contains(u, "not a method: Conv3D") {
		t.Errorf("Uncovered with a misspelt method = %v", u)
	}
	if len(opstest.Methods()) < 40 {
		t.Errorf("Methods() = %v: reflection over ops.Backend found too few", opstest.Methods())
	}
}

func TestCompare(t *testing.T) {
	ref := []float32{3, 4, 0}
	if e, err := opstest.Compare(ref, ref); err != nil || e != 0 {
		t.Errorf("Compare(x, x) = %g, %v", e, err)
	}
	// ‖(0.03, 0.04, 0)‖ / ‖(3, 4, 0)‖ = 0.05/5.
	if e, err := opstest.Compare([]float32{3.03, 4.04, 0}, ref); err != nil || math.Abs(e-0.01) > 1e-6 {
		t.Errorf("Compare(1.01·x, x) = %g, %v; want 0.01", e, err)
	}
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	for _, c := range []struct{ got, ref []float32 }{
		{[]float32{nan, 1}, []float32{0, 1}},
		{[]float32{0, 1}, []float32{nan, 1}},
		{[]float32{inf, 1}, []float32{-inf, 1}},
		{[]float32{inf, 1}, []float32{1e30, 1}},
		{[]float32{1}, []float32{1, 2}},
	} {
		if _, err := opstest.Compare(c.got, c.ref); err == nil {
			t.Errorf("Compare(%v, %v) found no mismatch", c.got, c.ref)
		}
	}
	if _, err := opstest.Compare([]float32{nan, inf, 1}, []float32{nan, inf, 1}); err != nil {
		t.Errorf("matching NaN and Inf: %v", err)
	}
}

// mutant wraps a correct backend and breaks one thing; the suite must notice.
type mutant struct {
	ops.Backend
	slice    func(b ops.Buf, off, n int) ops.Buf
	scale    func(alpha float32, x ops.Buf)
	silu     func(x, y ops.Buf)
	mse      func(a, b, loss ops.Buf)
	convBack func(s ops.ConvShape, x, w, dy, dx, dw, db ops.Buf)
	normal   func(seed uint64, stream uint32, offset uint64, y ops.Buf)
}

func (m *mutant) Name() string { return "mutant" }
func (m *mutant) Slice(b ops.Buf, off, n int) ops.Buf {
	if m.slice != nil {
		return m.slice(b, off, n)
	}
	return m.Backend.Slice(b, off, n)
}
func (m *mutant) Scale(alpha float32, x ops.Buf) {
	if m.scale != nil {
		m.scale(alpha, x)
		return
	}
	m.Backend.Scale(alpha, x)
}
func (m *mutant) SiLU(x, y ops.Buf) {
	if m.silu != nil {
		m.silu(x, y)
		return
	}
	m.Backend.SiLU(x, y)
}
func (m *mutant) MSE(a, b, loss ops.Buf) {
	if m.mse != nil {
		m.mse(a, b, loss)
		return
	}
	m.Backend.MSE(a, b, loss)
}
func (m *mutant) Conv2DBackward(s ops.ConvShape, x, w, dy, dx, dw, db ops.Buf) {
	if m.convBack != nil {
		m.convBack(s, x, w, dy, dx, dw, db)
		return
	}
	m.Backend.Conv2DBackward(s, x, w, dy, dx, dw, db)
}

func (m *mutant) Normal(seed uint64, stream uint32, offset uint64, y ops.Buf) {
	if m.normal != nil {
		m.normal(seed, stream, offset, y)
		return
	}
	m.Backend.Normal(seed, stream, offset, y)
}

func caseNamed(t *testing.T, prefix string) opstest.Case {
	for _, c := range opstest.Cases() {
		if strings.HasPrefix(c.Name, prefix) {
			return c
		}
	}
	t.Fatalf("no case %q", prefix)
	return opstest.Case{}
}

// TestSuiteCatchesMutants checks that each kind of check in the suite can fail.
func TestSuiteCatchesMutants(t *testing.T) {
	ref := cpu.New64()
	good := cpu.New()
	for _, c := range []struct {
		name, caseName, want string
		m                    *mutant
	}{
		{"view one element too long writes into the guard band", "Add/5000", "guard band",
			&mutant{slice: func(b ops.Buf, off, n int) ops.Buf { return good.Slice(b, off, n+1) }}},
		{"slightly wrong maths exceeds the tolerance", "Scale/5000", "normalized error",
			&mutant{scale: func(alpha float32, x ops.Buf) { good.Scale(alpha*(1+1e-4), x) }}},
		{"forward accumulating into its output", "SiLU/5000", "",
			&mutant{silu: func(x, y ops.Buf) {
				tmp := good.Alloc(x.Len())
				good.SiLU(x, tmp)
				good.Add(y, tmp, y)
			}}},
		{"an op writing its input", "MSE/999", "input b changed",
			&mutant{mse: func(a, b, loss ops.Buf) {
				good.Scale(0.5, b)
				good.MSE(a, b, loss)
			}}},
		{"a backward that overwrites instead of accumulating", "Conv2D/3x5x9x9", "normalized error",
			&mutant{convBack: func(s ops.ConvShape, x, w, dy, dx, dw, db ops.Buf) {
				if dw != nil {
					good.Fill(dw, 0)
				}
				good.Conv2DBackward(s, x, w, dy, dx, dw, db)
			}}},
		{"an RNG draw one ulp off", "Normal/257", "must be bit for bit",
			&mutant{normal: func(seed uint64, stream uint32, offset uint64, y ops.Buf) {
				good.Normal(seed, stream, offset, y)
				v := make([]float32, y.Len())
				good.Download(v, y)
				v[len(v)/2] = math.Nextafter32(v[len(v)/2], 0)
				good.Upload(y, v)
			}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.m.Backend = good
			_, fails := opstest.Check(caseNamed(t, c.caseName), c.m, ref)
			if len(fails) == 0 {
				t.Fatalf("case %s passed on the mutant", c.caseName)
			}
			if !strings.Contains(strings.Join(fails, "\n"), c.want) {
				t.Errorf("failures do not mention %q:\n%s", c.want, strings.Join(fails, "\n"))
			}
		})
	}
	// And the unbroken backend passes the same cases.
	for _, name := range []string{"Add/5000", "Scale/5000", "SiLU/5000", "MSE/999", "Conv2D/3x5x9x9", "Normal/257"} {
		if _, fails := opstest.Check(caseNamed(t, name), good, ref); len(fails) > 0 {
			t.Errorf("%s fails on the correct backend: %v", name, fails)
		}
	}
}

// TestOptions checks the options that adapt the table to a backend.
func TestOptions(t *testing.T) {
	all := opstest.Select()
	if len(all) != len(opstest.Cases()) {
		t.Fatalf("Select() kept %d of %d cases", len(all), len(opstest.Cases()))
	}
	conv := opstest.Select(opstest.Only(opstest.Uses("Conv2D", "Conv2DBackward")), opstest.MinTol(2e-3, "TF32"))
	if len(conv) < 5 {
		t.Fatalf("Select(Only(Uses(Conv2D…))) kept %d cases", len(conv))
	}
	for _, c := range conv {
		if !strings.HasPrefix(c.Name, "Conv2D/") || c.Tol != 2e-3 || c.Why != "TF32" {
			t.Errorf("case %s (tolerance %g, %q) after Only(Uses(Conv2D…)), MinTol(2e-3)", c.Name, c.Tol, c.Why)
		}
	}
	// MinTol leaves tighter bounds than tol alone and never lowers one.
	for _, c := range opstest.Select(opstest.MinTol(1e-6, "x")) {
		if c.Tol < 1e-6 {
			t.Errorf("%s: tolerance %g after MinTol(1e-6)", c.Name, c.Tol)
		}
	}
	for _, c := range opstest.Select(opstest.MinTol(0, "x")) {
		if c.Why == "x" {
			t.Errorf("%s: MinTol(0) changed the reason", c.Name)
		}
	}
	if n := len(opstest.Select(opstest.Only(func(opstest.Case) bool { return false }))); n != 0 {
		t.Errorf("Only(false) kept %d cases", n)
	}
}

// TestBF16Bands: every case of an op that bf16 changes (Conv2D, Linear, Attention) has a bf16 band, no other case
// has one, and the band formula gives what its comment derives.
func TestBF16Bands(t *testing.T) {
	for _, c := range opstest.Cases() {
		matmul := opstest.Uses("Conv2D", "Conv2DBackward", "Linear", "LinearBackward", "Attention", "AttentionBackward")(c)
		if matmul != (c.BF16 != nil) {
			t.Errorf("case %s: uses a matmul op %v, has a bf16 band %v", c.Name, matmul, c.BF16 != nil)
		}
	}
	// One stage, no amplification: 4·√(2/3)·2^-8 ≈ 0.0128, plus 1000·2^-24 ≈ 6e-5.
	if got := opstest.BF16Tol(1000, 1, 1); math.Abs(got-(4*math.Sqrt(2.0/3)/256+1000*0x1p-24)) > 1e-12 || got < 0.0128 || got > 0.013 {
		t.Errorf("BF16Tol(1000, 1, 1) = %g", got)
	}
	for _, c := range opstest.Select(opstest.BF16()) {
		if c.BF16 != nil && (c.Tol != c.BF16.Tol() || !strings.Contains(c.Why, "bf16 band")) {
			t.Errorf("case %s after BF16(): tolerance %g (%q)", c.Name, c.Tol, c.Why)
		}
		if c.BF16 == nil && c.Tol >= 1e-3 {
			t.Errorf("case %s: BF16() loosened a case without a band to %g", c.Name, c.Tol)
		}
	}
}
