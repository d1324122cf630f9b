package cpu

import (
	"math"
	"testing"
)

// Dense shares memory with the buffer, and the Linear op agrees with tensor's own
// GEMM (gonum's), an implementation independent of this package's OpenBLAS path.
func TestDenseSharesMemoryAndLinearMatchesTensorMatMul(t *testing.T) {
	be := New()
	const n, in, out = 5, 7, 3
	x, w, y := be.Alloc(n*in), be.Alloc(out*in), be.Alloc(n*out)
	xs, ws := make([]float32, n*in), make([]float32, out*in)
	for i := range xs {
		xs[i] = float32(math.Sin(float64(i)))
	}
	for i := range ws {
		ws[i] = float32(math.Cos(float64(3 * i)))
	}
	be.Upload(x, xs)
	be.Upload(w, ws)
	be.Linear(n, in, out, x, w, nil, y)

	xd, err := Dense[float32](x, n, in)
	if err != nil {
		t.Fatal(err)
	}
	wd, err := Dense[float32](w, out, in)
	if err != nil {
		t.Fatal(err)
	}
	wd.T()
	want, err := xd.MatMul(wd)
	if err != nil {
		t.Fatal(err)
	}
	got := Data[float32](y)
	for i, v := range want.Data().([]float32) {
		if d := math.Abs(float64(got[i] - v)); d > 1e-5 {
			t.Fatalf("Linear[%d] = %v, tensor MatMul %v", i, got[i], v)
		}
	}

	// No copy: a write through the tensor is seen by the backend.
	if err := xd.SetAt(float32(42), 1, 2); err != nil {
		t.Fatal(err)
	}
	if Data[float32](x)[1*in+2] != 42 {
		t.Fatal("Dense copied the buffer instead of wrapping it")
	}
	if _, err := Dense[float32](x, n, in+1); err == nil {
		t.Fatal("a shape that does not cover the buffer was accepted")
	}
}
