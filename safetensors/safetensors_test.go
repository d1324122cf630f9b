package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func sample() []Tensor {
	return []Tensor{
		{Name: "conv_in.weight", Shape: []int{2, 1, 1, 3}, Data: []float32{1, -2, 3.5, 0, float32(math.Inf(1)), 1e-30}},
		{Name: "conv_in.bias", Shape: []int{2}, Data: []float32{0.25, -0.125}},
		{Name: "scalar", Shape: nil, Data: []float32{7}},
	}
}

func TestRoundTrip(t *testing.T) {
	var b bytes.Buffer
	if err := Write(&b, sample(), map[string]string{"step": "12"}); err != nil {
		t.Fatal(err)
	}
	f, err := Decode(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if f.Metadata["step"] != "12" || len(f.Metadata[ChecksumKey]) != 8 {
		t.Fatalf("metadata %v", f.Metadata)
	}
	for _, want := range sample() {
		got, ok := f.Get(want.Name)
		if !ok {
			t.Fatalf("missing %s", want.Name)
		}
		if numel(got.Shape) != numel(want.Shape) || len(got.Shape) != len(want.Shape) {
			t.Errorf("%s shape %v want %v", want.Name, got.Shape, want.Shape)
		}
		for i := range want.Data {
			if math.Float32bits(got.Data[i]) != math.Float32bits(want.Data[i]) {
				t.Errorf("%s[%d] = %v want %v", want.Name, i, got.Data[i], want.Data[i])
			}
		}
	}
	// Order is preserved (data offsets follow the given order).
	var names []string
	for _, tt := range f.Tensors {
		names = append(names, tt.Name)
	}
	if !reflect.DeepEqual(names, []string{"conv_in.weight", "conv_in.bias", "scalar"}) {
		t.Errorf("order %v", names)
	}
}

// TestLayout checks the bytes against the format's definition, decoded by hand rather than by Decode.
func TestLayout(t *testing.T) {
	var b bytes.Buffer
	if err := Write(&b, sample(), nil); err != nil {
		t.Fatal(err)
	}
	raw := b.Bytes()
	n := binary.LittleEndian.Uint64(raw[:8])
	if n%8 != 0 {
		t.Errorf("header length %d not padded to 8", n)
	}
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(raw[8:8+n], &hdr); err != nil {
		t.Fatal(err)
	}
	var e struct {
		DType       string  `json:"dtype"`
		Shape       []int   `json:"shape"`
		DataOffsets []int64 `json:"data_offsets"`
	}
	if err := json.Unmarshal(hdr["conv_in.bias"], &e); err != nil {
		t.Fatal(err)
	}
	if e.DType != "F32" || !reflect.DeepEqual(e.Shape, []int{2}) || !reflect.DeepEqual(e.DataOffsets, []int64{24, 32}) {
		t.Errorf("bias entry %+v", e)
	}
	if err := json.Unmarshal(hdr["scalar"], &e); err != nil {
		t.Fatal(err)
	}
	if len(e.Shape) != 0 || !reflect.DeepEqual(e.DataOffsets, []int64{32, 36}) {
		t.Errorf("scalar entry %+v (shape must be [] not null)", e)
	}
	data := raw[8+n:]
	if len(data) != 36 {
		t.Fatalf("data section %d bytes, want 36", len(data))
	}
	if got := math.Float32frombits(binary.LittleEndian.Uint32(data[24:])); got != 0.25 {
		t.Errorf("bias[0] bytes decode to %v", got)
	}
}

// TestForeignFile reads a file assembled by hand as another tool would write it: no checksum, tensors listed in
// another order than their offsets.
func TestForeignFile(t *testing.T) {
	hdr := `{"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`
	var buf bytes.Buffer
	binary.Write(&buf, binary.LittleEndian, uint64(len(hdr)))
	buf.WriteString(hdr)
	binary.Write(&buf, binary.LittleEndian, float32(1.5))
	binary.Write(&buf, binary.LittleEndian, float32(-3))
	f, err := Decode(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	a, _ := f.Get("a")
	bb, _ := f.Get("b")
	if a.Data[0] != 1.5 || bb.Data[0] != -3 {
		t.Errorf("a=%v b=%v", a.Data, bb.Data)
	}
}

func TestDamagedFilesAreRefusedNamingTheFile(t *testing.T) {
	var b bytes.Buffer
	if err := Write(&b, sample(), nil); err != nil {
		t.Fatal(err)
	}
	good := b.Bytes()
	dir := t.TempDir()
	cases := map[string][]byte{
		"truncated.safetensors": good[:len(good)-3],
		"short.safetensors":     good[:5],
		"flipped.safetensors": func() []byte {
			c := bytes.Clone(good)
			c[len(c)-10] ^= 0x04
			return c
		}(),
		"hdrlen.safetensors": func() []byte {
			c := bytes.Clone(good)
			c[7] = 0x7f
			return c
		}(),
	}
	for name, content := range cases {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, content, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := ReadFile(p)
		if err == nil {
			t.Errorf("%s: damaged file accepted", name)
			continue
		}
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error does not name the file: %v", name, err)
		}
		if name == "flipped.safetensors" && !errors.Is(err, ErrChecksum) {
			t.Errorf("bit flip: want ErrChecksum, got %v", err)
		}
	}
}

func TestWriteRejectsBadInput(t *testing.T) {
	bad := [][]Tensor{
		{{Name: "x", Shape: []int{2}, Data: []float32{1}}},
		{{Name: "x", Shape: []int{1}, Data: []float32{1}}, {Name: "x", Shape: []int{1}, Data: []float32{1}}},
		{{Name: "", Shape: []int{1}, Data: []float32{1}}},
	}
	for i, ts := range bad {
		if err := Write(&bytes.Buffer{}, ts, nil); err == nil {
			t.Errorf("case %d accepted", i)
		}
	}
}
