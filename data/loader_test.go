package data

import (
	"math"
	"slices"
	"testing"
)

// idImages makes n images of 1×1×4 that carry their own index and orientation: [i mod 256, i / 256, 254, 255].
// Unflipped they end in 255, mirrored they start with it.
func idImages(n int) *Images {
	m := &Images{C: 1, H: 1, W: 4, Pix: make([]uint8, 4*n)}
	for i := 0; i < n; i++ {
		copy(m.Pix[4*i:], []uint8{uint8(i), uint8(i >> 8), 254, 255})
	}
	return m
}

// decodeID reads an idImages image back from floats: the index and whether it was mirrored.
func decodeID(t *testing.T, f []float32) (id int, flipped bool) {
	t.Helper()
	var u [4]int
	for k, v := range f {
		x := (float64(v) + 1) * 127.5
		u[k] = int(math.Round(x))
		if math.Abs(x-float64(u[k])) > 1e-4 {
			t.Fatalf("value %v is not an exact byte/127.5 - 1", v)
		}
	}
	switch {
	case u[2] == 254 && u[3] == 255:
		return u[0] + 256*u[1], false
	case u[1] == 254 && u[0] == 255:
		return u[3] + 256*u[2], true
	}
	t.Fatalf("image %v is neither an id image nor its mirror", u)
	return 0, false
}

// epochBatches draws one epoch's worth of batches and returns the ids (and flips) in order.
func drawIDs(t *testing.T, l *Loader, steps int) (ids []int, flips []bool, epochs []int) {
	t.Helper()
	b, c, h, w := l.BatchShape()
	buf := make([]float32, b*c*h*w)
	for s := 0; s < steps; s++ {
		e := l.Next(buf)
		for j := 0; j < b; j++ {
			id, f := decodeID(t, buf[j*4:(j+1)*4])
			ids, flips, epochs = append(ids, id), append(flips, f), append(epochs, e)
		}
	}
	return
}

func TestLoaderEveryImageOncePerEpoch(t *testing.T) {
	for _, tc := range []struct{ n, b int }{{12, 4}, {10, 3}, {7, 7}, {300, 1}, {1000, 64}} {
		l, err := NewLoader(idImages(tc.n), tc.b, 42, true)
		if err != nil {
			t.Fatal(err)
		}
		steps := tc.n / tc.b
		if l.StepsPerEpoch() != steps {
			t.Fatalf("%+v: StepsPerEpoch %d, want %d", tc, l.StepsPerEpoch(), steps)
		}
		var prev []int
		for e := 0; e < 3; e++ {
			ids, _, epochs := drawIDs(t, l, steps)
			for _, got := range epochs {
				if got != e {
					t.Fatalf("%+v: batch of epoch %d reported epoch %d", tc, e, got)
				}
			}
			seen := make(map[int]bool)
			for _, id := range ids {
				if id < 0 || id >= tc.n || seen[id] {
					t.Fatalf("%+v epoch %d: image %d out of range or drawn twice", tc, e, id)
				}
				seen[id] = true
			}
			if len(seen) != steps*tc.b { // N mod B images dropped, the rest exactly once
				t.Fatalf("%+v epoch %d: %d distinct images, want %d", tc, e, len(seen), steps*tc.b)
			}
			if want := EpochOrder(42, e, tc.n)[:steps*tc.b]; !slices.Equal(ids, want) {
				t.Fatalf("%+v epoch %d: order %v, want EpochOrder %v", tc, e, ids, want)
			}
			if tc.n > 7 && prev != nil && slices.Equal(ids, prev) {
				t.Fatalf("%+v: epoch %d repeats the order of epoch %d", tc, e, e-1)
			}
			prev = ids
		}
	}
}

func TestLoaderShuffles(t *testing.T) {
	const n = 1000
	o0, o1 := EpochOrder(1, 0, n), EpochOrder(1, 1, n)
	// Consecutive epochs must be unrelated: neither equal nor one a shift of the other.
	for shift := -2; shift <= 2; shift++ {
		same := 0
		for k := 2; k < n-2; k++ {
			if o0[k] == o1[k+shift] {
				same++
			}
		}
		if same > 10 {
			t.Fatalf("epoch 1 agrees with epoch 0 shifted by %d at %d positions", shift, same)
		}
	}
	fixed := 0
	for k, v := range o0 {
		if k == v {
			fixed++
		}
	}
	if fixed > 10 {
		t.Fatalf("epoch 0 leaves %d of %d images in place: not shuffled", fixed, n)
	}
	if slices.Equal(EpochOrder(1, 0, n), EpochOrder(2, 0, n)) {
		t.Fatal("seeds 1 and 2 give the same order")
	}
}

func TestLoaderDeterministic(t *testing.T) {
	m := idImages(50)
	draw := func(seed uint64) ([]int, []bool) {
		l, err := NewLoader(m, 8, seed, true)
		if err != nil {
			t.Fatal(err)
		}
		ids, flips, _ := drawIDs(t, l, 20) // 20 steps = 3 epochs and a bit
		return ids, flips
	}
	a, fa := draw(7)
	b, fb := draw(7)
	c, _ := draw(8)
	if !slices.Equal(a, b) || !slices.Equal(fa, fb) {
		t.Fatal("same seed, different batches")
	}
	if slices.Equal(a, c) {
		t.Fatal("seeds 7 and 8 give the same batches")
	}
}

func TestLoaderFlip(t *testing.T) {
	const n = 2000
	l, _ := NewLoader(idImages(n), 100, 3, true)
	ids, flips, _ := drawIDs(t, l, 20)
	count := 0
	for k, f := range flips {
		if f != FlipAt(3, 0, n, k) {
			t.Fatalf("draw %d (image %d): flipped %v, FlipAt says %v", k, ids[k], f, !f)
		}
		if f {
			count++
		}
	}
	// Binomial(2000, 1/2): the standard deviation is 22, so [900, 1100] is ±4.5σ.
	if count < 900 || count > 1100 {
		t.Fatalf("%d of %d flipped, want about half", count, n)
	}
	l, _ = NewLoader(idImages(n), 100, 3, false)
	if _, flips, _ := drawIDs(t, l, 20); slices.Contains(flips, true) {
		t.Fatal("flipped with flipping off")
	}
}

func TestLoaderFlipMirrorsRows(t *testing.T) {
	// 1 image, 2 channels, 2 rows, 3 columns: every row must come out reversed.
	m := &Images{C: 2, H: 2, W: 3, Pix: []uint8{0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32}}
	dst := make([]float32, 12)
	Gather(dst, m, []int{0}, []bool{true})
	want := []uint8{2, 1, 0, 12, 11, 10, 22, 21, 20, 32, 31, 30}
	for k, v := range dst {
		if v != float32(want[k])/127.5-1 {
			t.Fatalf("element %d = %v, want %v", k, v, float32(want[k])/127.5-1)
		}
	}
}

func TestLoaderResume(t *testing.T) {
	m := idImages(37)
	const b = 5 // 7 batches per epoch, 2 images dropped
	for _, stop := range []int{0, 3, 6, 7, 13, 22} {
		ref, _ := NewLoader(m, b, 99, true)
		drawIDs(t, ref, stop)
		pos := ref.Position()
		wantIDs, wantFlips, wantEpochs := drawIDs(t, ref, 12)

		resumed, _ := NewLoader(m, b, 99, true)
		if err := resumed.Seek(pos); err != nil {
			t.Fatal(err)
		}
		ids, flips, epochs := drawIDs(t, resumed, 12)
		if !slices.Equal(ids, wantIDs) || !slices.Equal(flips, wantFlips) || !slices.Equal(epochs, wantEpochs) {
			t.Fatalf("after %d steps (position %+v): resumed batches differ", stop, pos)
		}
		if want := (Position{Epoch: stop / 7, Index: stop % 7 * b}); pos != want {
			t.Fatalf("after %d steps: position %+v, want %+v", stop, pos, want)
		}
	}
	l, _ := NewLoader(m, b, 99, true)
	for _, p := range []Position{{-1, 0}, {0, -1}, {0, 38}} {
		if err := l.Seek(p); err == nil {
			t.Errorf("Seek(%+v) accepted", p)
		}
	}
	// An index past the last full batch means the next epoch.
	if err := l.Seek(Position{Epoch: 2, Index: 36}); err != nil || l.Position() != (Position{Epoch: 3}) {
		t.Fatalf("Seek to the dropped tail: %+v, %v", l.Position(), err)
	}
}

// plainDataset hides *Images behind the interface so the Loader takes its generic path.
type plainDataset struct{ m *Images }

func (p plainDataset) Len() int                 { return p.m.Len() }
func (p plainDataset) Shape() (c, h, w int)     { return p.m.Shape() }
func (p plainDataset) Image(i int, dst []uint8) { p.m.Image(i, dst) }

func TestLoaderValuesAndPaths(t *testing.T) {
	m := synthImages(20, 3, 5, 6)
	m.Pix[0], m.Pix[1] = 0, 255
	a, _ := NewLoader(m, 4, 5, true)
	g, _ := NewLoader(plainDataset{m}, 4, 5, true)
	idx, flips := make([]int, 4), make([]bool, 4)
	ia, ig, want := make([]float32, 4*90), make([]float32, 4*90), make([]float32, 4*90)
	lo, hi := float32(0), float32(0)
	for s := 0; s < 15; s++ {
		c, _ := NewLoader(m, 4, 5, true)
		c.Seek(a.Position())
		c.NextIndices(idx, flips)
		Gather(want, m, idx, flips)
		a.Next(ia)
		g.Next(ig)
		if !slices.Equal(ia, want) || !slices.Equal(ig, want) {
			t.Fatalf("step %d: Next on *Images, Next on a plain Dataset and NextIndices+Gather disagree", s)
		}
		for _, v := range ia {
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	if lo != -1 || hi != 1 {
		t.Fatalf("values span [%v, %v], want exactly [-1, 1] (bytes 0 and 255 are in the data)", lo, hi)
	}
	big, _ := NewLoader(synthImages(1000, 3, 5, 6), 4, 5, true)
	big.Next(ia)                                                // the epoch's order is made once, here
	allocs := testing.AllocsPerRun(50, func() { big.Next(ia) }) // 51 more steps stay within epoch 0
	if allocs != 0 {
		t.Fatalf("Next allocates %v times per batch", allocs)
	}
}

func TestToFloat(t *testing.T) {
	src := make([]uint8, 256)
	for i := range src {
		src[i] = uint8(i)
	}
	dst := make([]float32, len(src))
	ToFloat(dst, src)
	for i, v := range src {
		// float32 rounds twice (divide, subtract): within 1e-7 of the exact value.
		if want := float64(v)/127.5 - 1; math.Abs(float64(dst[i])-want) > 1e-7 {
			t.Errorf("ToFloat(%d) = %v, want %v", v, dst[i], want)
		}
	}
	if dst[0] != -1 || dst[255] != 1 || dst[127] >= 0 || dst[128] <= 0 {
		t.Errorf("0, 127, 128, 255 → %v %v %v %v, want -1, <0, >0, 1", dst[0], dst[127], dst[128], dst[255])
	}
}

func TestNewLoaderRefuses(t *testing.T) {
	for _, b := range []int{0, -1, 11} {
		if _, err := NewLoader(idImages(10), b, 1, false); err == nil {
			t.Errorf("batch %d of 10 images accepted", b)
		}
	}
}
