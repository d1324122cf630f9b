package safetensors

import (
	"bytes"
	"math"
	"testing"
)

// FuzzDecode: Decode never panics; what it accepts writes back (Write) to a file that decodes to the same tensors
// and metadata, bit for bit. Seeds: f.Add below and testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	var b bytes.Buffer
	if err := Write(&b, []Tensor{{Name: "w", Shape: []int{2, 2}, Data: []float32{1, -2, 3.5, float32(math.Inf(1))}},
		{Name: "s", Data: []float32{7}}}, map[string]string{"k": "v"}); err != nil {
		f.Fatal(err)
	}
	good := b.Bytes()
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(good[:12])
	f.Add([]byte("\x10\x00\x00\x00\x00\x00\x00\x00{}              "))
	f.Fuzz(func(t *testing.T, src []byte) {
		file, err := Decode(src)
		if err != nil {
			return
		}
		var again bytes.Buffer
		if err := Write(&again, file.Tensors, file.Metadata); err != nil {
			t.Fatalf("accepted file does not write back: %v", err)
		}
		back, err := Decode(again.Bytes())
		if err != nil {
			t.Fatalf("written-back file does not decode: %v", err)
		}
		if len(back.Tensors) != len(file.Tensors) {
			t.Fatalf("%d tensors became %d", len(file.Tensors), len(back.Tensors))
		}
		for i, ta := range file.Tensors {
			tb := back.Tensors[i]
			if ta.Name != tb.Name || len(ta.Data) != len(tb.Data) || len(ta.Shape) != len(tb.Shape) {
				t.Fatalf("tensor %q changed to %q", ta.Name, tb.Name)
			}
			for j := range ta.Data {
				if math.Float32bits(ta.Data[j]) != math.Float32bits(tb.Data[j]) {
					t.Fatalf("tensor %q element %d changed", ta.Name, j)
				}
			}
		}
		for k, v := range file.Metadata {
			if k != ChecksumKey && back.Metadata[k] != v {
				t.Fatalf("metadata %q changed", k)
			}
		}
	})
}
