package imgio

import (
	"bytes"
	"encoding/binary"
	"image"
	"image/png"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestToByte(t *testing.T) {
	cases := map[float32]uint8{-1: 0, 1: 255, 0: 128, -2: 0, 3: 255, -0.5: 64}
	for v, want := range cases {
		if got := ToByte(v); got != want {
			t.Errorf("ToByte(%v) = %d want %d", v, got, want)
		}
	}
	if got := ToByte(float32(math.NaN())); got != 0 {
		t.Errorf("NaN -> %d", got)
	}
}

func TestGridGrayLayout(t *testing.T) {
	// 3 images of 1×2×2, cols = ⌈√3⌉ = 2: a 2×2 grid, each image filled with its own value.
	vals := []float32{-1, 0, 1}
	var x []float32
	for _, v := range vals {
		x = append(x, v, v, v, v)
	}
	var b bytes.Buffer
	if err := WriteGridPNG(&b, x, 3, 1, 2, 2); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&b)
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds() != image.Rect(0, 0, 2*(2+Pad)+Pad, 2*(2+Pad)+Pad) {
		t.Fatalf("bounds %v", img.Bounds())
	}
	g := img.(*image.Gray)
	at := func(x, y int) uint8 { return g.GrayAt(x, y).Y }
	if at(Pad, Pad) != 0 || at(Pad+2+Pad+1, Pad+1) != 128 || at(Pad, Pad+2+Pad) != 255 {
		t.Errorf("image pixels %d %d %d", at(Pad, Pad), at(Pad+2+Pad+1, Pad+1), at(Pad, Pad+2+Pad))
	}
	if at(0, 0) != 0 || at(Pad+2+Pad, Pad+2+Pad) != 0 {
		t.Errorf("padding / empty cell not black")
	}
}

func TestGridRGBChannels(t *testing.T) {
	// One 3×1×1 image: R = 1, G = −1, B = 0.
	img, err := Grid([]float32{1, -1, 0}, 1, 3, 1, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	r, g, b, _ := img.At(Pad, Pad).RGBA()
	if r>>8 != 255 || g>>8 != 0 || b>>8 != 128 {
		t.Errorf("rgb = %d %d %d", r>>8, g>>8, b>>8)
	}
	if _, err := Grid([]float32{1}, 1, 2, 1, 1, 0); err == nil {
		t.Error("2 channels accepted")
	}
	if _, err := Grid([]float32{1}, 2, 1, 1, 1, 0); err == nil {
		t.Error("short input accepted")
	}
}

func TestNPYRoundTripAndLayout(t *testing.T) {
	x := []float32{1, -2.5, 3, 4, 5, float32(math.Inf(-1))}
	var b bytes.Buffer
	if err := WriteNPY(&b, x, []int{2, 1, 3}); err != nil {
		t.Fatal(err)
	}
	raw := b.Bytes()
	hl := int(binary.LittleEndian.Uint16(raw[8:10]))
	if (10+hl)%64 != 0 || raw[10+hl-1] != '\n' {
		t.Errorf("header not 64-aligned or not newline-terminated: %d", 10+hl)
	}
	if !strings.Contains(string(raw[10:10+hl]), "'shape': (2, 1, 3)") {
		t.Errorf("header %q", raw[10:10+hl])
	}
	got, shape, err := DecodeNPY(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(shape, []int{2, 1, 3}) || !reflect.DeepEqual(got, x) {
		t.Errorf("got %v %v", got, shape)
	}
	// 1-D shapes are written as (n,), as NumPy does.
	b.Reset()
	WriteNPY(&b, []float32{1, 2}, []int{2})
	if !strings.Contains(b.String(), "(2,)") {
		t.Error("1-D shape tuple lacks trailing comma")
	}
	if _, _, err := DecodeNPY(raw[:len(raw)-1]); err == nil {
		t.Error("truncated npy accepted")
	}
}

func TestNPYFloat64(t *testing.T) {
	hdr := "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }"
	hdr += strings.Repeat(" ", 64-(10+len(hdr)+1)%64) + "\n"
	var b bytes.Buffer
	b.WriteString("\x93NUMPY\x01\x00")
	binary.Write(&b, binary.LittleEndian, uint16(len(hdr)))
	b.WriteString(hdr)
	binary.Write(&b, binary.LittleEndian, []float64{0.5, -1})
	got, shape, err := DecodeNPY(b.Bytes())
	if err != nil || !reflect.DeepEqual(got, []float32{0.5, -1}) || !reflect.DeepEqual(shape, []int{2}) {
		t.Errorf("got %v %v %v", got, shape, err)
	}
}
