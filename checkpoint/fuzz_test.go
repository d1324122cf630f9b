package checkpoint

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/model"
)

// fuzzTable is a two-tensor model table, so that fuzzed checkpoints stay a few hundred bytes.
var fuzzTable = []model.Param{
	{Name: "conv.weight", Shape: []int{2, 1, 1, 2}, Offset: 0, Size: 4},
	{Name: "conv.bias", Shape: []int{2}, Offset: 4, Size: 2},
}

func fuzzState() *State {
	st := &State{Step: 3, AdamStep: 2, Skipped: 1, Data: data.Position{Epoch: 1, Index: 4}, Seed: 9, Config: "[train]\nseed = 9\n"}
	for k, dst := range []*[]float32{&st.Params, &st.EMA, &st.AdamM, &st.AdamV} {
		*dst = make([]float32, 6)
		for i := range *dst {
			(*dst)[i] = float32(k*10+i) / 7
		}
	}
	return st
}

// FuzzReadCheckpoint: Read never panics on arbitrary bytes, every error names the file, and whatever it
// accepts is a State that encodes and reads back to itself. Seeds: a good checkpoint, truncated and bit-flipped
// copies (f.Add below) and testdata/fuzz/FuzzReadCheckpoint.
func FuzzReadCheckpoint(f *testing.F) {
	var b bytes.Buffer
	if err := Encode(&b, fuzzTable, fuzzState()); err != nil {
		f.Fatal(err)
	}
	good := b.Bytes()
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(good[:7])
	flipped := bytes.Clone(good)
	flipped[len(flipped)-3] ^= 1
	f.Add(flipped)
	f.Add([]byte{})
	dir := f.TempDir() // one per worker process, reused: a t.TempDir per input slows fuzzing to a crawl
	f.Fuzz(func(t *testing.T, src []byte) {
		p := filepath.Join(dir, "ck.safetensors")
		if err := os.WriteFile(p, src, 0o644); err != nil {
			t.Fatal(err)
		}
		st, err := Read(p, fuzzTable)
		if err != nil {
			if !strings.Contains(err.Error(), p) {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		var again bytes.Buffer
		if err := Encode(&again, fuzzTable, st); err != nil {
			t.Fatalf("accepted state does not encode: %v", err)
		}
		q := filepath.Join(dir, "again.safetensors")
		os.WriteFile(q, again.Bytes(), 0o644)
		back, err := Read(q, fuzzTable)
		if err != nil {
			t.Fatalf("re-encoded checkpoint does not read: %v", err)
		}
		if !reflect.DeepEqual(back, st) && !hasNaN(st) {
			t.Fatalf("round trip changed the state:\n%+v\n%+v", st, back)
		}
	})
}

func hasNaN(st *State) bool {
	for _, s := range [][]float32{st.Params, st.EMA, st.AdamM, st.AdamV} {
		for _, v := range s {
			if v != v {
				return true
			}
		}
	}
	return false
}
