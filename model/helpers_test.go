package model

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"testing"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/configs"
	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/ops"
)

// loadConfig reads one of the shipped configs.
func loadConfig(t testing.TB, name string) config.Config {
	t.Helper()
	src, err := configs.Files.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(name, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// read returns a buffer's contents at the backend's full precision.
func read(b ops.Buf) []float64 {
	switch v := b.(type) {
	case *cpu.Buf[float64]:
		return append([]float64(nil), cpu.Data[float64](v)...)
	case *cpu.Buf[float32]:
		d := cpu.Data[float32](v)
		out := make([]float64, len(d))
		for i, x := range d {
			out[i] = float64(x)
		}
		return out
	}
	panic(fmt.Sprintf("read: unexpected buffer %T", b))
}

// upload writes float32 values (exact in either precision) into a buffer.
func upload(be ops.Backend, v []float32) ops.Buf {
	b := be.Alloc(len(v))
	be.Upload(b, v)
	return b
}

// fixture is the parsed output of scripts/torch_parity.py.
type fixtureTensor struct {
	shape []int
	data  []float64
	f32   []float32 // the stored values when the file holds float32
}

// loadFixture reads the format documented in scripts/torch_parity.py.
func loadFixture(t *testing.T, path string) (map[string]fixtureTensor, []string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("parity fixture: %v (regenerate with /usr/bin/python3 scripts/torch_parity.py)", err)
	}
	defer f.Close()
	le := binary.LittleEndian
	rd := func(v any) {
		if err := binary.Read(f, le, v); err != nil {
			t.Fatalf("parity fixture %s: %v", path, err)
		}
	}
	magic := make([]byte, 8)
	if _, err := io.ReadFull(f, magic); err != nil || string(magic) != "DDPMFIX1" {
		t.Fatalf("parity fixture %s: bad magic %q (%v)", path, magic, err)
	}
	var count uint32
	rd(&count)
	out := map[string]fixtureTensor{}
	var order []string
	for range count {
		var nlen uint16
		rd(&nlen)
		name := make([]byte, nlen)
		rd(name)
		var esize, rank uint8
		rd(&esize)
		rd(&rank)
		dims := make([]uint32, rank)
		rd(dims)
		ft := fixtureTensor{}
		n := 1
		for _, d := range dims {
			ft.shape = append(ft.shape, int(d))
			n *= int(d)
		}
		switch esize {
		case 4:
			ft.f32 = make([]float32, n)
			rd(ft.f32)
			for _, v := range ft.f32 {
				ft.data = append(ft.data, float64(v))
			}
		case 8:
			ft.data = make([]float64, n)
			rd(ft.data)
		default:
			t.Fatalf("parity fixture %s: tensor %s has element size %d", path, name, esize)
		}
		out[string(name)] = ft
		order = append(order, string(name))
	}
	if rest, _ := io.ReadAll(f); len(rest) != 0 {
		t.Fatalf("parity fixture %s: %d trailing bytes", path, len(rest))
	}
	return out, order
}

// relErr is max_i |got_i − want_i| / max_i |want_i|: the largest error measured
// against the tensor's scale, so that tiny entries of a tensor are not judged alone.
func relErr(got, want []float64) (maxAbs, scale float64) {
	for i := range want {
		maxAbs = math.Max(maxAbs, math.Abs(got[i]-want[i]))
		scale = math.Max(scale, math.Abs(want[i]))
	}
	return maxAbs, scale
}
