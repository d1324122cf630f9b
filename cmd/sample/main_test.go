package main

import (
	"bytes"
	"context"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/imgio"
	"github.com/ddpmgo/ddpm/internal/tinyrun"
	"github.com/ddpmgo/ddpm/rng"
)

// trainedCheckpoint trains the tiny model (package tinyrun) and returns its latest checkpoint.
func trainedCheckpoint(t *testing.T) string {
	t.Helper()
	_, res := tinyrun.Run(t)
	return res.Checkpoint
}

func sample(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, errb.String()
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSample(t *testing.T) {
	ck := trainedCheckpoint(t)
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }

	// Same seed and flags: same bytes. Another batch: the same samples up to the last bits (the CPU's GEMM and
	// convolution libraries choose their kernels, and so their summation order, by the batch size on some CPUs).
	for i, batch := range []string{"5", "5", "2"} {
		code, stderr := sample(t, "-ckpt", ck, "-sampler", "ddim", "-steps", "4", "-eta", "0", "-seed", "3", "-n", "5",
			"-batch", batch, "-out", p("g"+string(rune('0'+i))+".png"), "-npy", p("s"+string(rune('0'+i))+".npy"))
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
	}
	for _, pair := range [][2]string{{"g0.png", "g1.png"}, {"s0.npy", "s1.npy"}} {
		if !bytes.Equal(read(t, p(pair[0])), read(t, p(pair[1]))) {
			t.Errorf("%s and %s differ", pair[0], pair[1])
		}
	}
	s0, _, err0 := imgio.ReadNPY(p("s0.npy"))
	s2, _, err2 := imgio.ReadNPY(p("s2.npy"))
	if err0 != nil || err2 != nil || len(s0) != len(s2) {
		t.Fatalf("reading the samples: %v %v", err0, err2)
	}
	var worst float64
	for i := range s0 {
		worst = max(worst, math.Abs(float64(s0[i]-s2[i])))
	}
	t.Logf("batch 5 vs batch 2: largest difference %.3g", worst)
	if worst > 1e-5 {
		t.Errorf("batch 5 and batch 2 samples differ by up to %.3g (> 1e-5)", worst)
	}
	x, shape, err := imgio.ReadNPY(p("s0.npy"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(shape, []int{5, 1, 8, 8}) {
		t.Errorf("npy shape %v", shape)
	}
	for i, v := range x {
		if !(v >= -1 && v <= 1) {
			t.Fatalf("sample %d = %v outside [-1, 1]", i, v)
		}
	}
	img, err := png.Decode(bytes.NewReader(read(t, p("g0.png"))))
	if err != nil {
		t.Fatal(err)
	}
	if w := img.Bounds().Dx(); w != 3*(8+imgio.Pad)+imgio.Pad {
		t.Errorf("grid width %d for 5 images in 3 columns", w)
	}

	// -init with the x_T the sampler would draw for seed 3 gives the same samples; another seed differs.
	xT := make([]float32, 5*64)
	rng.FillNormal(xT, 3, rng.StreamSampler, 0)
	var b bytes.Buffer
	imgio.WriteNPY(&b, xT, []int{5, 1, 8, 8})
	os.WriteFile(p("xT.npy"), b.Bytes(), 0o644)
	for _, c := range []struct {
		args []string
		same bool
	}{
		{[]string{"-init", p("xT.npy"), "-seed", "9"}, true}, // eta 0: the seed only draws x_T, replaced by -init
		{[]string{"-seed", "4", "-n", "5"}, false},
		{[]string{"-seed", "3", "-n", "5", "-raw"}, false},
	} {
		args := append([]string{"-ckpt", ck, "-sampler", "ddim", "-steps", "4", "-eta", "0", "-npy", p("c.npy")}, c.args...)
		if code, stderr := sample(t, args...); code != 0 {
			t.Fatalf("%v: exit %d: %s", c.args, code, stderr)
		}
		if got := bytes.Equal(read(t, p("c.npy")), read(t, p("s0.npy"))); got != c.same {
			t.Errorf("%v: same as seed 3 = %v, want %v", c.args, got, c.same)
		}
	}

	// DDPM (all T steps) runs and defaults to a PNG.
	wd, _ := os.Getwd()
	os.Chdir(dir)
	code, stderr := sample(t, "-ckpt", ck, "-sampler", "ddpm", "-n", "2")
	os.Chdir(wd)
	if code != 0 {
		t.Fatalf("ddpm: exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(p("samples.png")); err != nil {
		t.Error("no default samples.png")
	}

	// Every sampler runs from the flags, and says how many network evaluations it took.
	for _, args := range [][]string{
		{"-sampler", "ddpm", "-steps", "5", "-variance", "posterior", "-spacing", "trailing"},
		{"-sampler", "ddim", "-steps", "4", "-clipped-eps=false"},
		{"-sampler", "euler", "-steps", "4"},
		{"-sampler", "euler_maruyama", "-steps", "4"},
		{"-sampler", "heun", "-steps", "3", "-churn", "1", "-spacing", "linspace"},
		{"-sampler", "dpmpp2m", "-steps", "4"},
	} {
		code, stderr := sample(t, append([]string{"-ckpt", ck, "-n", "2", "-npy", p("any.npy")}, args...)...)
		evals := args[3]
		if args[1] == "heun" {
			evals = "5"
		}
		if code != 0 || !strings.Contains(stderr, args[1]+" "+args[3]+" steps, "+evals+" evaluations") {
			t.Errorf("%v: exit %d: %s", args, code, stderr)
		}
	}
}

func TestSampleErrors(t *testing.T) {
	ck := trainedCheckpoint(t)
	good := read(t, ck)
	bad := filepath.Join(t.TempDir(), "flipped.safetensors")
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 1
	os.WriteFile(bad, flipped, 0o644)
	cases := []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "-ckpt"},
		{[]string{"-ckpt", ck, "-sampler", "ddpm", "-steps", "21"}, 2, "allowed 1 … 20"},
		{[]string{"-ckpt", ck, "-sampler", "lms"}, 2, "lms"},
		{[]string{"-ckpt", ck, "-sampler", "ddim", "-spacing", "karras"}, 2, "karras"},
		{[]string{"-ckpt", ck, "-sampler", "dpmpp2m", "-steps", "20"}, 2, "steps < T"},
		{[]string{"-ckpt", ck, "-device", "cuda"}, 2, "-tags cuda"},
		{[]string{"-ckpt", ck, "-n", "0"}, 2, "-n"},
		{[]string{"-ckpt", bad}, 1, bad},
		{[]string{"-ckpt", filepath.Join(t.TempDir(), "none.safetensors")}, 1, "none.safetensors"},
	}
	for _, c := range cases {
		code, stderr := sample(t, c.args...)
		if code != c.code || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, %q; want %d naming %q", c.args, code, stderr, c.code, c.want)
		}
	}
}

// TestSampleBench: -bench times sampling steps of a checkpoint's model and ends with the bench line; without a model
// it is a usage error.
func TestSampleBench(t *testing.T) {
	ck := trainedCheckpoint(t)
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"-ckpt", ck, "-bench", "3", "-bench-warmup", "1", "-batch", "2"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	last := lines[len(lines)-1]
	m := regexp.MustCompile(`^bench: ([0-9.]+) img/s, ([0-9.]+) GFLOP/s, ([0-9.]+) ms/step, ([0-9]+) MiB peak$`).FindStringSubmatch(last)
	if m == nil {
		t.Fatalf("last line %q is not a bench line", last)
	}
	imgs, _ := strconv.ParseFloat(m[1], 64)
	ms, _ := strconv.ParseFloat(m[3], 64)
	if r := imgs * ms / 1000 / 2; r < 0.95 || r > 1.05 {
		t.Errorf("bench line %q: img/s × s/step = %.3f batches of 2, want 1", last, r)
	}
	if code, stderr := sample(t, "-bench", "3"); code != 2 || !strings.Contains(stderr, "-ckpt PATH or -c FILE") {
		t.Errorf("-bench without a model: exit %d, %q", code, stderr)
	}
}

// TestSamplePrecision: -precision bf16 draws the same images as fp32 up to bf16's rounding (same bytes run to run),
// tf32 is refused on the CPU and an unknown precision is a usage error.
func TestSamplePrecision(t *testing.T) {
	ck := trainedCheckpoint(t)
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	args := []string{"-ckpt", ck, "-sampler", "ddim", "-steps", "4", "-eta", "0", "-seed", "3", "-n", "5"}
	if code, stderr := sample(t, append(args, "-precision", "tf32", "-npy", p("tf32.npy"))...); code != 2 || !strings.Contains(stderr, "GPU") {
		t.Errorf("-precision tf32 on the CPU: exit %d, %s", code, stderr)
	}
	if code, stderr := sample(t, append(args, "-precision", "fp16", "-npy", p("fp16.npy"))...); code != 2 || !strings.Contains(stderr, "allowed") {
		t.Errorf("-precision fp16: exit %d, %s", code, stderr)
	}
	if code, stderr := sample(t, append(args, "-precision", "fp32", "-npy", p("fp32.npy"))...); code != 0 {
		t.Fatalf("-precision fp32: exit %d, %s", code, stderr)
	}
	code, stderr := sample(t, append(args, "-precision", "bf16", "-npy", p("bf16.npy"))...)
	if code == 2 && strings.Contains(stderr, "avx512_bf16") {
		t.Skipf("this CPU cannot run bf16, refused as it must be: %s", stderr)
	}
	if code != 0 {
		t.Fatalf("-precision bf16: exit %d, %s", code, stderr)
	}
	if code, stderr := sample(t, append(args, "-precision", "bf16", "-npy", p("bf16b.npy"))...); code != 0 {
		t.Fatalf("-precision bf16 again: exit %d, %s", code, stderr)
	}
	if !bytes.Equal(read(t, p("bf16.npy")), read(t, p("bf16b.npy"))) {
		t.Error("two bf16 runs differ")
	}
	a, _, _ := imgio.ReadNPY(p("fp32.npy"))
	b, _, _ := imgio.ReadNPY(p("bf16.npy"))
	var worst float64
	same := true
	for i := range a {
		worst = max(worst, math.Abs(float64(a[i]-b[i])))
		same = same && a[i] == b[i]
	}
	t.Logf("bf16 vs fp32 samples: largest difference %.3g (pixels in [-1, 1])", worst)
	if same || worst > 0.1 {
		t.Errorf("bf16 vs fp32 samples: largest difference %.3g, identical %v; want a difference, below 0.1", worst, same)
	}
}
