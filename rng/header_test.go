package rng

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// headerProgram drives kernels/philox.cuh from stdin commands and prints every result as hex bits.
const headerProgram = `#include "philox.cuh"
#include <stdio.h>
#include <string.h>

static unsigned int fbits(float f) {
  unsigned int u;
  memcpy(&u, &f, sizeof u);
  return u;
}
static unsigned long long fnv(unsigned long long h, unsigned int v) {
  return (h ^ v) * 1099511628211ull;
}

int main(void) {
  char op[32];
  while (scanf("%31s", op) == 1) {
    if (!strcmp(op, "philox")) {
      philox4x32_t c;
      unsigned int k0, k1;
      if (scanf("%x %x %x %x %x %x", &c.x, &c.y, &c.z, &c.w, &k0, &k1) != 6) return 2;
      philox4x32_t r = philox4x32_10(c, k0, k1);
      printf("%08x %08x %08x %08x\n", r.x, r.y, r.z, r.w);
    } else if (!strcmp(op, "draw")) {
      unsigned long long seed, i;
      unsigned int stream;
      if (scanf("%llx %x %llx", &seed, &stream, &i) != 3) return 2;
      printf("%08x %08x %08x %u\n", philox_uint32(seed, stream, i), fbits(philox_uniform(seed, stream, i)),
             fbits(philox_normal(seed, stream, i)), philox_intn(seed, stream, i, 1000ull));
    } else if (!strcmp(op, "normal4")) {
      unsigned long long seed, block;
      unsigned int stream;
      float z[4];
      if (scanf("%llx %x %llx", &seed, &stream, &block) != 3) return 2;
      philox_normal4(seed, stream, block, z);
      printf("%08x %08x %08x %08x\n", fbits(z[0]), fbits(z[1]), fbits(z[2]), fbits(z[3]));
    } else if (!strcmp(op, "exhaustive")) {
      // Every input of the float maths: ln, sin/cos and the uniform map over all odd k < 2^24.
      unsigned long long hl = 14695981039346656037ull, hs = hl, hu = hl;
      for (unsigned int k = 1; k < (1u << 24); k += 2) {
        float s, c;
        philox_sincos_2pi(k, &s, &c);
        hl = fnv(hl, fbits(philox_log_unit(k)));
        hs = fnv(fnv(hs, fbits(s)), fbits(c));
        hu = fnv(hu, fbits(philox_uniform_from_bits(k << 8)));
      }
      printf("%016llx %016llx %016llx\n", hl, hs, hu);
    } else if (!strcmp(op, "bulk")) {
      unsigned long long seed, n, h = 14695981039346656037ull;
      unsigned int stream;
      if (scanf("%llx %x %llx", &seed, &stream, &n) != 3) return 2;
      for (unsigned long long i = 0; i < n; i++) h = fnv(h, fbits(philox_normal(seed, stream, i)));
      printf("%016llx\n", h);
    } else if (!strcmp(op, "streams")) {
      printf("%u %u %u %u %u %u %u %u\n", PHILOX_STREAM_INIT, PHILOX_STREAM_TIMESTEP, PHILOX_STREAM_NOISE,
             PHILOX_STREAM_SAMPLER, PHILOX_STREAM_SHUFFLE, PHILOX_STREAM_FLIP, PHILOX_STREAM_DROPOUT, PHILOX_STREAM_NLL);
    } else {
      return 3;
    }
  }
  return 0;
}
`

const fnvOffset, fnvPrime = 14695981039346656037, 1099511628211

func fnv(h uint64, v uint32) uint64 { return (h ^ uint64(v)) * fnvPrime }

// TestHeaderMatchesGo compiles kernels/philox.cuh with g++ (the host compiler of nvcc and of the kernels' CPU shim)
// into a small program, feeds it the same queries as the Go package and requires every returned bit to match:
// Philox blocks (the Random123 vectors and random counters/keys), uint32/uniform/normal/intn draws at indices
// chosen around the 32-bit and 64-bit edges of the counter, all 2^23 inputs of ln, sin/cos and the uniform map,
// and a hash of a million consecutive normals. It builds twice: with -O2 -ffp-contract=off (what the shim uses), and
// with -O3 -march=native -ffp-contract=off, where FMA instructions exist on most hosts, to show that contraction
// is really off. A missing g++ is a failure, not a skip: the parity of the two RNGs is what keeps CPU and GPU runs
// identical.
func TestHeaderMatchesGo(t *testing.T) {
	gxx, err := exec.LookPath("g++")
	if err != nil {
		t.Fatalf("g++ not found on PATH (%v): it is required to check kernels/philox.cuh against package rng", err)
	}
	kernels, err := filepath.Abs(filepath.Join("..", "kernels"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(kernels, "philox.cuh")); err != nil {
		t.Fatalf("header: %v", err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "philox_check.cpp")
	if err := os.WriteFile(src, []byte(headerProgram), 0o644); err != nil {
		t.Fatal(err)
	}

	input, want := headerQueries()
	for _, flags := range [][]string{
		{"-O2", "-ffp-contract=off"},
		{"-O3", "-march=native", "-ffp-contract=off"},
	} {
		t.Run(strings.Join(flags, " "), func(t *testing.T) {
			bin := filepath.Join(dir, fmt.Sprintf("philox_check_%d", len(flags)))
			args := append(append([]string{}, flags...), "-std=c++11", "-Wall", "-Wextra", "-Werror",
				"-I", kernels, "-o", bin, src)
			if out, err := exec.Command(gxx, args...).CombinedOutput(); err != nil {
				t.Fatalf("g++ %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			cmd := exec.Command(bin)
			cmd.Stdin = strings.NewReader(input)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("running %s: %v\n%s", bin, err, stderr.Bytes())
			}
			sc := bufio.NewScanner(bytes.NewReader(out))
			n, bad := 0, 0
			for sc.Scan() {
				if n >= len(want) {
					t.Fatalf("C++ printed more than the %d expected lines", len(want))
				}
				if got := sc.Text(); got != want[n].line {
					bad++
					if bad <= 10 {
						t.Errorf("%s:\n  C++: %s\n  Go:  %s", want[n].query, got, want[n].line)
					}
				}
				n++
			}
			if n != len(want) {
				t.Fatalf("C++ printed %d lines, want %d", n, len(want))
			}
			if bad > 0 {
				t.Errorf("%d of %d results differ", bad, n)
			}
		})
	}
}

type headerResult struct{ query, line string }

// headerQueries returns the program's input and, for each output line, the query and the line Go expects.
func headerQueries() (string, []headerResult) {
	var in strings.Builder
	var want []headerResult
	add := func(query, line string) {
		in.WriteString(query + "\n")
		want = append(want, headerResult{query, line})
	}

	for _, c := range philoxKATs {
		if c.rounds != 10 {
			continue
		}
		q := fmt.Sprintf("philox %x %x %x %x %x %x", c.ctr[0], c.ctr[1], c.ctr[2], c.ctr[3], c.key[0], c.key[1])
		add(q, words(Philox4x32(c.ctr, c.key)))
	}
	// Random counters and keys from the generator itself (any values will do; they only need to vary).
	for j := uint64(0); j < 200; j++ {
		var ctr [4]uint32
		var key [2]uint32
		FillUint32(ctr[:], j, 99, 0)
		FillUint32(key[:], j, 99, 4)
		q := fmt.Sprintf("philox %x %x %x %x %x %x", ctr[0], ctr[1], ctr[2], ctr[3], key[0], key[1])
		add(q, words(Philox4x32(ctr, key)))
	}

	seeds := []uint64{0, 1, 42, 0xdeadbeefcafef00d, ^uint64(0)}
	streams := []uint32{0, StreamInit, StreamNoise, StreamSampler, ^uint32(0)}
	var idx []uint64
	for i := uint64(0); i < 64; i++ {
		idx = append(idx, i, 1<<32-32+i, 1<<34-32+i, ^uint64(0)-i)
	}
	for _, seed := range seeds {
		for _, stream := range streams {
			for _, i := range idx {
				q := fmt.Sprintf("draw %x %x %x", seed, stream, i)
				add(q, fmt.Sprintf("%08x %08x %08x %d", Uint32(seed, stream, i),
					math.Float32bits(Uniform(seed, stream, i)), math.Float32bits(Normal(seed, stream, i)),
					Intn(seed, stream, i, 1000)))
			}
		}
	}
	for b := uint64(0); b < 64; b++ {
		var z [4]float32
		FillNormal(z[:], 7, StreamSampler, 4*b)
		add(fmt.Sprintf("normal4 %x %x %x", 7, StreamSampler, b),
			fmt.Sprintf("%08x %08x %08x %08x", math.Float32bits(z[0]), math.Float32bits(z[1]),
				math.Float32bits(z[2]), math.Float32bits(z[3])))
	}

	hl, hs, hu := uint64(fnvOffset), uint64(fnvOffset), uint64(fnvOffset)
	for k := uint32(1); k < 1<<24; k += 2 {
		s, c := sinCos2Pi(k)
		hl = fnv(hl, math.Float32bits(logUnit(k)))
		hs = fnv(fnv(hs, math.Float32bits(s)), math.Float32bits(c))
		hu = fnv(hu, math.Float32bits(UniformFromBits(k<<8)))
	}
	add("exhaustive", fmt.Sprintf("%016x %016x %016x", hl, hs, hu))

	const bulkN = 1 << 20
	z := make([]float32, bulkN)
	FillNormal(z, 0x5eed, StreamNoise, 0)
	h := uint64(fnvOffset)
	for _, v := range z {
		h = fnv(h, math.Float32bits(v))
	}
	add(fmt.Sprintf("bulk %x %x %x", 0x5eed, StreamNoise, bulkN), fmt.Sprintf("%016x", h))

	add("streams", fmt.Sprintf("%d %d %d %d %d %d %d %d", StreamInit, StreamTimestep, StreamNoise, StreamSampler,
		StreamShuffle, StreamFlip, StreamDropout, StreamNLL))
	return in.String(), want
}

func words(w [4]uint32) string { return fmt.Sprintf("%08x %08x %08x %08x", w[0], w[1], w[2], w[3]) }
