package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/internal/tinyrun"
)

// trainedCheckpoint trains the tiny model (package tinyrun, T = 20) and returns its latest checkpoint and a pack of
// 10 other random images.
func trainedCheckpoint(t *testing.T) (ckpt, pack string) {
	t.Helper()
	cfg, res := tinyrun.Run(t)
	dir := cfg.Run.Dir
	pack = filepath.Join(dir, "held.pack")
	if err := data.WritePack(pack, tinyrun.Images(10, 6)); err != nil {
		t.Fatal(err)
	}
	return res.Checkpoint, pack
}

func eval(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestNLL(t *testing.T) {
	ck, pack := trainedCheckpoint(t)
	dir := t.TempDir()
	line := regexp.MustCompile(`^nll: ([0-9.]+) ± ([0-9.]+) bits/dim \(standard error over (\d+) images; (.*)\) = prior .* decoder .* KL .*; .*, (\d+) evaluations in`)
	var results []report
	for _, c := range []struct {
		args   []string
		images int
		mode   string
		evals  int
	}{
		{[]string{"-data", pack, "-n", "4", "-t", "3"}, 4, "sampled", 4 * 4},
		{[]string{"-data", pack, "-n", "3", "-t", "0", "-batch", "7"}, 3, "all", 3 * 20},
		{[]string{"-data", pack, "-holdout", "5", "-t", "19", "-variance", "posterior", "-clip"}, 5, "sampled", 5 * 20},
	} {
		js := filepath.Join(dir, "nll.json")
		code, stdout, stderr := eval(append([]string{"-ckpt", ck, "-nll", "-json", js}, c.args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", c.args, code, stderr)
		}
		m := line.FindStringSubmatch(stdout)
		if m == nil || m[3] != itoa(c.images) || m[5] != itoa(c.evals) {
			t.Fatalf("%v: line %q", c.args, stdout)
		}
		var r report
		b, _ := os.ReadFile(js)
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		if r.Images != c.images || r.Mode != c.mode || r.Evals != c.evals || r.Dims != 64 || r.T != 20 ||
			!(r.BPD > 0) || math.IsInf(r.BPD, 0) || !(r.StdErr > 0) || r.Step != "3" || r.Weights != "ema" ||
			math.Abs(r.BPD-(r.PriorBPD+r.DecBPD+r.KLBPD)) > 1e-9*r.BPD {
			t.Errorf("%v: %s", c.args, b)
		}
		results = append(results, r)
	}
	if !strings.Contains(results[2].Data, "last 5 images") || results[2].Variance != "posterior" || !results[2].Clip {
		t.Errorf("-holdout 5 -variance posterior -clip: %+v", results[2])
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestNLLErrors(t *testing.T) {
	ck, pack := trainedCheckpoint(t)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-nll"}, 2, "-ckpt"},
		{[]string{"-ckpt", ck}, 2, "give -nll"},
		{[]string{"-ckpt", ck, "-nll", "-data", pack, "-t", "20"}, 2, "at most T − 1 = 19"},
		{[]string{"-ckpt", ck, "-nll", "-data", pack, "-holdout", "11"}, 2, "holds 10 images"},
		{[]string{"-ckpt", ck, "-nll", "-data", pack, "-variance", "huge"}, 2, "huge"},
		{[]string{"-ckpt", ck, "-nll", "-data", filepath.Join(t.TempDir(), "none")}, 1, "none"},
		{[]string{"-ckpt", filepath.Join(t.TempDir(), "none.safetensors"), "-nll"}, 1, "none.safetensors"},
	} {
		code, _, stderr := eval(c.args...)
		if code != c.code || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, %q; want %d naming %q", c.args, code, stderr, c.code, c.want)
		}
	}
}
