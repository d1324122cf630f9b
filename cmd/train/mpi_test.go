//go:build mpi

package main

// The data-parallel trainer under mpirun (make test-mpi: go test -tags mpi -run MPI ./cmd/train/). These tests need
// Open MPI (scripts/setup.sh --mpi) and Fashion-MNIST; they fail, never skip, without them.

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddpmgo/ddpm/checkpoint"
	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/model"
)

// mpiEnv is the environment of every mpirun: as root Open MPI wants both variables.
var mpiEnv = []string{"OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"}

// mpiSetup builds bin/train with -tags mpi (and, when default is set, without it) and finds mpirun.
type mpiKit struct {
	bin, plainBin, mpirun, tiny, tmp string
}

func mpiSetup(t *testing.T) *mpiKit {
	t.Helper()
	k := &mpiKit{tmp: t.TempDir(), tiny: filepath.Join("..", "..", "configs", "tiny.toml")}
	var err error
	if k.mpirun, err = exec.LookPath("mpirun"); err != nil {
		t.Fatalf("mpirun not found: install Open MPI with scripts/setup.sh --mpi (%v)", err)
	}
	if _, err := os.Stat(data.FashionMNISTDir); err != nil {
		t.Fatalf("Fashion-MNIST is not installed at %s: scripts/setup.sh installs dataset-fashion-mnist", data.FashionMNISTDir)
	}
	k.bin = filepath.Join(k.tmp, "train")
	if out, err := exec.Command(goTool(t), "build", "-tags", "mpi", "-o", k.bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build -tags mpi: %v\n%s", err, out)
	}
	return k
}

func goTool(t *testing.T) string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	t.Fatal("no go tool to build the binary")
	return ""
}

// settings are those of every run here: configs/tiny.toml with dropout and flips (so that the shards' masks and
// flips are tested too), sampling cut down.
func (k *mpiKit) args(dir string, extra ...string) []string {
	a := []string{"-c", k.tiny, "-set", "run.dir=" + dir, "-set", "model.dropout=0.1", "-set", "data.flip=true",
		"-set", "sample.count=4", "-set", "sample.steps=3", "-log-format", "json"}
	for _, e := range extra {
		a = append(a, "-set", e)
	}
	return a
}

// ranks is mpirun's command line for n ranks of bin with args: one thread per rank (GOMAXPROCS=1), oversubscribed
// (CI has 2 cores); with mpmd, rank r > 0 is told to write into dir.rankR instead (it must write nothing).
func (k *mpiKit) ranks(n int, flags []string, args []string) *exec.Cmd {
	a := []string{"--oversubscribe", "--bind-to", "none", "-x", "GOMAXPROCS=1"}
	a = append(a, flags...)
	a = append(a, "-np", strconv.Itoa(n), k.bin)
	cmd := exec.Command(k.mpirun, append(a, args...)...)
	cmd.Env = append(os.Environ(), mpiEnv...)
	return cmd
}

func runCmd(t *testing.T, cmd *exec.Cmd) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	err := cmd.Run()
	t.Logf("%s: %.1f s", strings.Join(cmd.Args[:min(len(cmd.Args), 8)], " "), time.Since(t0).Seconds())
	return out.String(), err
}

func mustRunCmd(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	out, err := runCmd(t, cmd)
	if err != nil {
		t.Fatalf("%v: %v\n%s", cmd.Args, err, out)
	}
	return out
}

// one runs the mpi binary without mpirun: one rank, 2 threads.
func (k *mpiKit) one(args []string) *exec.Cmd {
	cmd := exec.Command(k.bin, args...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=2")
	return cmd
}

// state reads the checkpoint at step of run dir.
func state(t *testing.T, table []model.Param, dir string, step int) *checkpoint.State {
	t.Helper()
	st, err := checkpoint.Read(filepath.Join(checkpoint.Dir(dir), checkpoint.Name(step)), table)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func tinyTable(t *testing.T, k *mpiKit) ([]model.Param, []float32, config.Config) {
	t.Helper()
	cfg, err := config.Load(k.tiny, nil)
	if err != nil {
		t.Fatal(err)
	}
	u, err := model.New(cpu.New(), cfg.Model, cfg.Data.Channels, cfg.Data.ImageSize, 1)
	if err != nil {
		t.Fatal(err)
	}
	u.Init(cfg.Train.Seed)
	p0 := make([]float32, u.NumParams())
	cpu.New().Download(p0, u.Params())
	return u.Table(), p0, cfg
}

func normErr(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(num) / math.Max(math.Sqrt(den), 1e-30)
}

// closeStates: the same counters and data position, the updates p − p0 and the moments within tol (normalized).
func closeStates(t *testing.T, what string, got, want *checkpoint.State, p0 []float32, tol float64) {
	t.Helper()
	if got.Step != want.Step || got.AdamStep != want.AdamStep || got.Data != want.Data {
		t.Fatalf("%s: counters %d/%d/%+v, want %d/%d/%+v", what, got.Step, got.AdamStep, got.Data, want.Step, want.AdamStep, want.Data)
	}
	upd := func(p []float32) []float32 {
		d := make([]float32, len(p))
		for i := range p {
			d[i] = p[i] - p0[i]
		}
		return d
	}
	for _, c := range []struct {
		name      string
		got, want []float32
	}{{"update", upd(got.Params), upd(want.Params)}, {"EMA update", upd(got.EMA), upd(want.EMA)},
		{"AdamW m", got.AdamM, want.AdamM}, {"AdamW v", got.AdamV, want.AdamV}} {
		e := normErr(c.got, c.want)
		if !(e <= tol) {
			t.Errorf("%s: %s: normalized error %.3g > %g", what, c.name, e, tol)
		} else {
			t.Logf("%s: %s: normalized error %.3g", what, c.name, e)
		}
	}
}

func sameStates(t *testing.T, what string, a, b *checkpoint.State) {
	t.Helper()
	if a.Step != b.Step || a.AdamStep != b.AdamStep || a.Data != b.Data {
		t.Fatalf("%s: counters differ", what)
	}
	for _, c := range [][2][]float32{{a.Params, b.Params}, {a.EMA, b.EMA}, {a.AdamM, b.AdamM}, {a.AdamV, b.AdamV}} {
		for i := range c[0] {
			if math.Float32bits(c[0][i]) != math.Float32bits(c[1][i]) {
				t.Fatalf("%s: element %d: %v vs %v (want bit-identical)", what, i, c[0][i], c[1][i])
			}
		}
	}
}

// metricsLosses is step → loss of a run's metrics.jsonl.
func metricsLosses(t *testing.T, dir string) map[int]float64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	m := map[int]float64{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var step int
		var loss float64
		if _, err := fmt.Sscanf(line[strings.Index(line, `"step":`):], `"step":%d`, &step); err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		fmt.Sscanf(line[strings.Index(line, `"loss":`):], `"loss":%g`, &loss)
		m[step] = loss
	}
	return m
}

// TestMPIMatchesOneProcess: `mpirun -np 2` on configs/tiny.toml (global batch 16, dropout, flips) after 20 steps is
// one process with batch 16 within float tolerance (the same losses, data position and counters; weights, EMA
// and moments to 1e-3), the same binary without mpirun runs as one rank, rank 1 writes nothing (it is told a run
// directory of its own, which must stay absent), and two 2-rank runs are bit-identical.
func TestMPIMatchesOneProcess(t *testing.T) {
	k := mpiSetup(t)
	table, p0, _ := tinyTable(t, k)
	one := filepath.Join(k.tmp, "one")
	out := mustRunCmd(t, k.one(k.args(one)))
	if strings.Contains(out, `"ranks"`) {
		t.Errorf("without mpirun the binary ran as several ranks:\n%s", out)
	}
	want := state(t, table, one, 20)
	wantLoss := metricsLosses(t, one)

	var two []*checkpoint.State
	for i := range 2 {
		dir := filepath.Join(k.tmp, fmt.Sprint("two", i))
		cmd := k.ranks(1, nil, k.args(dir))
		cmd.Args = append(cmd.Args, ":", "-np", "1", k.bin)
		cmd.Args = append(cmd.Args, k.args(dir+".rank1")...)
		out := mustRunCmd(t, cmd)
		if !strings.Contains(out, `"ranks": 2`) && !strings.Contains(out, `"ranks":2`) {
			t.Fatalf("no 2-rank run:\n%s", out)
		}
		if _, err := os.Stat(dir + ".rank1"); !os.IsNotExist(err) {
			t.Errorf("rank 1 wrote into its run directory: %v", err)
		}
		two = append(two, state(t, table, dir, 20))
		got := metricsLosses(t, dir)
		for step, l := range wantLoss {
			if e := math.Abs(got[step]-l) / l; !(e <= 1e-4) {
				t.Errorf("step %d loss: 2 ranks %.7g, one process %.7g", step, got[step], l)
			}
		}
	}
	closeStates(t, "2 ranks vs 1", two[0], want, p0, 1e-3)
	sameStates(t, "two 2-rank runs", two[0], two[1])
}

// TestMPIResumeAcrossRankCounts: a 1-rank checkpoint resumed by 2 ranks, and a 2-rank one resumed by 1, continue
// the run (the metrics run on to step 20, the end is one process's within tolerance); the 2-rank continuation
// from the 1-rank checkpoint is bit-identical to itself resumed once more halfway (exact resume on 2 ranks).
func TestMPIResumeAcrossRankCounts(t *testing.T) {
	k := mpiSetup(t)
	table, p0, _ := tinyTable(t, k)
	ref := filepath.Join(k.tmp, "ref")
	mustRunCmd(t, k.one(k.args(ref)))
	want := state(t, table, ref, 20)

	a := filepath.Join(k.tmp, "a") // 1 rank to 10, 2 ranks to 20
	mustRunCmd(t, k.one(k.args(a, "train.max_steps=10")))
	mustRunCmd(t, k.ranks(2, nil, append(k.args(a), "-resume")))
	a20 := state(t, table, a, 20)
	closeStates(t, "1 rank to 10, 2 ranks to 20", a20, want, p0, 1e-3)
	if l := metricsLosses(t, a); len(l) != 5 { // steps 1, 5, 10, 15, 20
		t.Errorf("metrics steps after the resume: %v", l)
	}

	b := filepath.Join(k.tmp, "b") // 1 rank to 10, 2 ranks to 15, 2 ranks to 20
	mustRunCmd(t, k.one(k.args(b, "train.max_steps=10")))
	mustRunCmd(t, k.ranks(2, nil, append(k.args(b, "train.max_steps=15", "train.checkpoint_every=5"), "-resume")))
	mustRunCmd(t, k.ranks(2, nil, append(k.args(b), "-resume")))
	sameStates(t, "2-rank continuation 10→20 vs 10→15→20", state(t, table, b, 20), a20)

	c := filepath.Join(k.tmp, "c") // 2 ranks to 10, 1 rank to 20
	mustRunCmd(t, k.ranks(2, nil, k.args(c, "train.max_steps=10")))
	mustRunCmd(t, k.one(append(k.args(c), "-resume")))
	closeStates(t, "2 ranks to 10, 1 rank to 20", state(t, table, c, 20), want, p0, 1e-3)
}

// rankPID finds the process of rank r of a run whose ranks carry marker in their environment.
func rankPID(t *testing.T, marker string, r int) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		vars := strings.Split(string(env), "\x00")
		has := func(v string) bool {
			for _, x := range vars {
				if x == v {
					return true
				}
			}
			return false
		}
		if has("DDPM_TEST_MARKER="+marker) && has(fmt.Sprintf("OMPI_COMM_WORLD_RANK=%d", r)) {
			return pid
		}
	}
	t.Fatalf("no process of rank %d", r)
	return 0
}

// long are the settings of the runs that are killed: 120 steps (seconds), a checkpoint every 20.
var long = []string{"train.max_steps=120", "train.checkpoint_every=20", "train.log_every=20"}

// startRanks starts 2 ranks of a long run (with flags), waits until rank 0 has logged step ≥ 40, and returns the
// command, its output and rank 1's pid.
func startRanks(t *testing.T, k *mpiKit, dir string, flags ...string) (*exec.Cmd, *bytes.Buffer, int) {
	t.Helper()
	marker := filepath.Base(dir) + fmt.Sprint(time.Now().UnixNano())
	cmd := k.ranks(2, []string{"-x", "DDPM_TEST_MARKER"}, append(k.args(dir, long...), flags...))
	cmd.Env = append(cmd.Env, "DDPM_TEST_MARKER="+marker)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, _ := os.ReadFile(filepath.Join(dir, "metrics.jsonl")); bytes.Count(b, []byte("\n")) >= 3 { // steps 1, 20, 40
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no progress in 60 s:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cmd, &out, rankPID(t, marker, 1)
}

// waitExit waits at most limit for cmd and returns its exit code (−1 when killed by a signal) and the time taken.
func waitExit(t *testing.T, cmd *exec.Cmd, out *bytes.Buffer, limit time.Duration) (int, time.Duration) {
	t.Helper()
	t0 := time.Now()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err == nil {
			return 0, time.Since(t0)
		}
		if errors.As(err, &ee) {
			return ee.ExitCode(), time.Since(t0)
		}
		t.Fatal(err)
	case <-time.After(limit):
		cmd.Process.Kill()
		t.Fatalf("the ranks did not exit within %v:\n%s", limit, out.String())
	}
	return 0, 0
}

// grepLines is the lines of s that hold sub.
func grepLines(s, sub string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// checkpointsLoad checks that every checkpoint file of dir loads (none is partial).
func checkpointsLoad(t *testing.T, table []model.Param, dir string) {
	t.Helper()
	cks, _ := filepath.Glob(filepath.Join(checkpoint.Dir(dir), "*.safetensors"))
	if len(cks) == 0 {
		t.Fatalf("no checkpoint in %s", dir)
	}
	for _, p := range cks {
		if _, err := checkpoint.Read(p, table); err != nil {
			t.Errorf("checkpoint %s: %v", p, err)
		}
	}
}

// TestMPIKilledRank: SIGKILL of rank 1 makes mpirun end the run with a non-zero status within seconds, naming rank
// 1; every checkpoint left loads; -resume on 2 ranks finishes the run bit-identical to one never killed.
func TestMPIKilledRank(t *testing.T) {
	k := mpiSetup(t)
	table, _, _ := tinyTable(t, k)
	dir := filepath.Join(k.tmp, "killed")
	cmd, out, pid := startRanks(t, k, dir)
	syscall.Kill(pid, syscall.SIGKILL)
	code, took := waitExit(t, cmd, out, 60*time.Second)
	t.Logf("after SIGKILL of rank 1: exit %d in %.1f s; mpirun says:\n%s", code, took.Seconds(), grepLines(out.String(), "rank 1"))
	if code == 0 || !strings.Contains(out.String(), "rank 1") {
		t.Fatalf("exit %d, want non-zero naming rank 1:\n%s", code, out.String())
	}
	checkpointsLoad(t, table, dir)
	mustRunCmd(t, k.ranks(2, nil, append(k.args(dir, long...), "-resume")))
	if tmp := tmpFiles(checkpoint.Dir(dir)); len(tmp) > 0 {
		t.Errorf("temporary files left after -resume: %v", tmp)
	}
	straight := filepath.Join(k.tmp, "straight")
	mustRunCmd(t, k.ranks(2, nil, k.args(straight, long...)))
	sameStates(t, "killed and resumed vs straight", state(t, table, dir, 120), state(t, table, straight, 120))
}

// TestMPIHungRank: a rank that stops answering (SIGSTOP) makes the other stop within the watchdog's limit
// (-dist-timeout 10s) plus its probe, naming rank 1, and mpirun exits non-zero.
func TestMPIHungRank(t *testing.T) {
	k := mpiSetup(t)
	table, _, _ := tinyTable(t, k)
	dir := filepath.Join(k.tmp, "hung")
	cmd, out, pid := startRanks(t, k, dir, "-dist-timeout", "10s")
	syscall.Kill(pid, syscall.SIGSTOP)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	code, took := waitExit(t, cmd, out, 90*time.Second)
	t.Logf("after SIGSTOP of rank 1: exit %d in %.1f s; the log says:\n%s", code, took.Seconds(), grepLines(out.String(), "rank 1"))
	if code == 0 || !strings.Contains(out.String(), "rank 1 does not answer") {
		t.Fatalf("exit %d, want non-zero with the watchdog naming rank 1:\n%s", code, out.String())
	}
	if took > 45*time.Second {
		t.Errorf("took %v to stop; the watchdog's limit is 10 s", took)
	}
	checkpointsLoad(t, table, dir)
}

// TestMPINCCLOnEmulator runs the NCCL path on the CPU emulator (-device emu -collective nccl) with the test double
// of libnccl.so.2 over MPI (cuda/nccl/testdata/fakenccl.c): two steps on 2 ranks are bit-identical to the same run
// with -collective mpi (both sum in rank order), and the double saw the all-reduces. Without the library the run
// stops with an error naming it; an asynchronous NCCL error on rank 1 stops every rank.
func TestMPINCCLOnEmulator(t *testing.T) {
	k := mpiSetup(t)
	mpicc, err := exec.LookPath("mpicc")
	if err != nil {
		t.Fatalf("mpicc not found (libopenmpi-dev): %v", err)
	}
	lib := fakeNCCL(t, k, mpicc)
	table, _, _ := tinyTable(t, k)
	small := func(dir string) []string {
		return append(k.args(dir, "train.batch_size=4", "train.max_steps=2", "train.checkpoint_every=2", "sample.count=2",
			"sample.steps=1"), "-device", "emu")
	}
	withLib := []string{"-x", "LD_LIBRARY_PATH=" + lib}
	nccl := filepath.Join(k.tmp, "nccl")
	out := mustRunCmd(t, k.ranks(2, withLib, append(small(nccl), "-collective", "nccl")))
	if !strings.Contains(out, "nccl 2.99.99") {
		t.Errorf("the run did not use the NCCL double:\n%s", out)
	}
	for r := range 2 {
		if !strings.Contains(out, fmt.Sprintf("fakenccl: rank %d: ", r)) || strings.Contains(out, fmt.Sprintf("fakenccl: rank %d: 0 all-reduces", r)) {
			t.Errorf("rank %d: no all-reduce went through the NCCL double:\n%s", r, out)
		}
	}
	viaMPI := filepath.Join(k.tmp, "mpi")
	mustRunCmd(t, k.ranks(2, nil, append(small(viaMPI), "-collective", "mpi")))
	sameStates(t, "nccl vs mpi on the emulator", state(t, table, nccl, 2), state(t, table, viaMPI, 2))

	out, err = runCmd(t, k.ranks(2, nil, append(small(filepath.Join(k.tmp, "nolib")), "-collective", "nccl")))
	if err == nil || !strings.Contains(out, "cannot load libnccl.so.2") {
		t.Errorf("without libnccl.so.2: %v, want an error naming it:\n%s", err, out)
	}
	fail := append(withLib, "-x", "FAKE_NCCL_FAIL_RANK=1", "-x", "FAKE_NCCL_FAIL_AFTER=1")
	cmd := k.ranks(2, fail, append(small(filepath.Join(k.tmp, "async")), "-collective", "nccl"))
	cmd.Env = append(cmd.Env, "FAKE_NCCL_FAIL_RANK=1", "FAKE_NCCL_FAIL_AFTER=1")
	out, err = runCmd(t, cmd)
	if err == nil || !strings.Contains(out, "asynchronous error on rank 1") {
		t.Errorf("asynchronous NCCL error on rank 1: %v, want every rank stopped naming it:\n%s", err, out)
	}
}

// fakeNCCL builds the NCCL test double (cuda/nccl/testdata/fakenccl.c) and returns its folder.
func fakeNCCL(t *testing.T, k *mpiKit, mpicc string) string {
	t.Helper()
	lib := filepath.Join(k.tmp, "fakenccl")
	os.MkdirAll(lib, 0o755)
	if out, err := exec.Command(mpicc, "-O2", "-shared", "-fPIC", "-o", filepath.Join(lib, "libnccl.so.2"),
		filepath.Join("..", "..", "cuda", "nccl", "testdata", "fakenccl.c")).CombinedOutput(); err != nil {
		t.Fatalf("mpicc: %v\n%s", err, out)
	}
	return lib
}

// TestMPINCCLOnEmulatedDriver runs the code that calls NCCL in the build a GPU host runs: bin/train built with
// -tags "cuda mpi" (gorgonia.org/cu, cuda/nccl on device pointers) on the emulated driver (bin/emudriver/libcuda.so.1,
// make emu-driver) with the NCCL double, 2 ranks, -device cuda -collective nccl: the same tensors bit for bit as the
// NCCL run on -device emu (the emulated driver runs the same kernels), and the double saw the all-reduces, queued on
// the communication stream. The gradient goes in buckets (-bucket-mib 0.04: about 10,000 of the 41,609 parameters)
// while the backward pass goes on, and the result is the same when the emulated driver holds back the
// communication stream's work until a wait needs it (DDPM_EMU_STREAMS=defer-streams) or the default stream's
// kernels (defer-null: each all-reduce runs as soon as the kernels before it have, before the rest of the backward
// pass, which therefore must not write a bucket it handed over); its stream log shows the first all-reduce queued
// before the last backward kernel, and run at Flush's wait. Leaving out either wait (DDPM_NCCL_DROP_WAIT) is caught
// in the mode that defers the side it orders: the run fails or ends with other tensors.
func TestMPINCCLOnEmulatedDriver(t *testing.T) {
	k := mpiSetup(t)
	mpicc, err := exec.LookPath("mpicc")
	if err != nil {
		t.Fatalf("mpicc not found (libopenmpi-dev): %v", err)
	}
	lib := fakeNCCL(t, k, mpicc)
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	if out, err := exec.Command("make", "-s", "-C", root, "emu-driver").CombinedOutput(); err != nil {
		t.Fatalf("make emu-driver (scripts/setup.sh --cuda installs what it needs): %v\n%s", err, out)
	}
	gpuBin := filepath.Join(k.tmp, "train-cuda-mpi")
	build := exec.Command(goTool(t), "build", "-tags", "cuda mpi", "-o", gpuBin, ".")
	build.Env = append(os.Environ(), "CGO_LDFLAGS="+os.Getenv("CGO_LDFLAGS")+" -L/usr/lib/x86_64-linux-gnu/stubs")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags \"cuda mpi\": %v\n%s", err, out)
	}
	table, _, _ := tinyTable(t, k)
	small := func(dir, device string) []string {
		return append(k.args(dir, "train.batch_size=4", "train.max_steps=2", "train.checkpoint_every=2", "sample.count=2",
			"sample.steps=1"), "-device", device, "-collective", "nccl")
	}
	emu := filepath.Join(k.tmp, "emu")
	mustRunCmd(t, k.ranks(2, []string{"-x", "LD_LIBRARY_PATH=" + lib}, small(emu, "emu")))
	want := state(t, table, emu, 2)
	// gpu runs bin/train -device cuda on the emulated driver with the environment env (NAME=VALUE, passed to every
	// rank) and returns its output and error.
	gpu := func(dir string, env ...string) (string, error) {
		flags := []string{"-x", "LD_LIBRARY_PATH=" + filepath.Join(root, "bin", "emudriver") + ":" + lib, "-x", "DDPM_EMU_CC=9.0"}
		for _, e := range env {
			flags = append(flags, "-x", e)
		}
		args := append(small(dir, "cuda"), "-bucket-mib", "0.04")
		cmd := k.ranks(2, flags, args)
		cmd.Args[len(cmd.Args)-len(args)-1] = gpuBin
		cmd.Env = append(cmd.Env, env...)
		return runCmd(t, cmd)
	}
	for _, mode := range []string{"sync", "defer-streams", "defer-null"} {
		dir := filepath.Join(k.tmp, "gpu-"+mode)
		logs := filepath.Join(k.tmp, "streams-"+mode)
		os.MkdirAll(logs, 0o755)
		out, err := gpu(dir, "DDPM_EMU_STREAMS="+mode, "DDPM_EMU_STREAM_LOG="+filepath.Join(logs, "log.%p"))
		if err != nil {
			t.Fatalf("%s: %v\n%s", mode, err, out)
		}
		if !strings.Contains(out, "emudriver: emulated CUDA driver") {
			t.Errorf("%s: the run did not use the emulated driver:\n%s", mode, out)
		}
		for r := range 2 {
			if !strings.Contains(out, fmt.Sprintf("fakenccl: rank %d: ", r)) || strings.Contains(out, fmt.Sprintf("fakenccl: rank %d: 0 all-reduces", r)) {
				t.Errorf("%s: rank %d: no all-reduce went through the NCCL double:\n%s", mode, r, out)
			}
			if strings.Contains(out, fmt.Sprintf("fakenccl: rank %d: ", r)) && !regexp.MustCompile(fmt.Sprintf(`fakenccl: rank %d: (\d+) all-reduces, \d+ floats, \d+ broadcasts, (\d+) on streams`, r)).MatchString(out) {
				t.Errorf("%s: rank %d: the double's summary lacks the collectives on streams:\n%s", mode, r, out)
			}
		}
		sameStates(t, "nccl on the emulated driver ("+mode+") vs nccl on -device emu", state(t, table, dir, 2), want)
		files, _ := filepath.Glob(filepath.Join(logs, "log.*"))
		if len(files) != 2 {
			t.Fatalf("%s: %d stream logs, want one per rank", mode, len(files))
		}
		for _, f := range files {
			checkOverlap(t, mode, f)
		}
	}
	for _, c := range []struct{ mode, drop string }{{"defer-streams", "flush"}, {"defer-null", "ready"}} {
		dir := filepath.Join(k.tmp, "drop-"+c.drop)
		out, err := gpu(dir, "DDPM_EMU_STREAMS="+c.mode, "DDPM_NCCL_DROP_WAIT="+c.drop)
		if err != nil {
			why := ""
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, `"error"`) && why == "" {
					why = l
				}
			}
			if why == "" || strings.Contains(out, "emudriver: kernel fault") || strings.Contains(out, "panic") {
				t.Errorf("without the %s wait (%s): the run failed, but not with the trainer's error:\n%s", c.drop, c.mode, out)
			}
			t.Logf("without the %s wait (%s): the run failed, as it should: %v: %s", c.drop, c.mode, err, why)
			continue
		}
		st := state(t, table, dir, 2)
		same := true
		for i := range st.Params {
			same = same && math.Float32bits(st.Params[i]) == math.Float32bits(want.Params[i])
		}
		if same {
			t.Errorf("without the %s wait, %s: the same weights as with it; the emulated driver did not catch the "+
				"missing wait:\n%s", c.drop, c.mode, out)
		} else {
			t.Logf("without the %s wait (%s): other weights, as they should be", c.drop, c.mode)
		}
	}
}

// checkOverlap reads a rank's DDPM_EMU_STREAM_LOG: in each step, all-reduces (host functions of the NCCL double on
// s1, the communication stream) were queued before the last backward kernel on s0, the default stream, at least two
// of them (the gradient goes in buckets during the backward pass), and Flush's wait on s0 follows them. With
// defer-streams, the communication stream's work runs at that wait.
func checkOverlap(t *testing.T, mode, file string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	backward := func(l string) bool {
		return strings.HasPrefix(l, "issue s0 launch ") && (strings.Contains(l, "_bwd") || strings.Contains(l, "_grad"))
	}
	steps := 0
	for i := 0; i < len(lines); i++ {
		if lines[i] != "issue s1 host" {
			continue
		}
		first, lastBwd := i, -1
		var hosts []int
		for ; i < len(lines) && !strings.HasPrefix(lines[i], "issue s0 wait "); i++ {
			switch {
			case lines[i] == "issue s1 host":
				hosts = append(hosts, i)
			case backward(lines[i]):
				lastBwd = i
			}
		}
		if i == len(lines) {
			t.Fatalf("%s: %s: all-reduces from line %d on, and no wait of the default stream after them", mode, file, first+1)
		}
		steps++
		before := 0
		for _, h := range hosts {
			if h < lastBwd {
				before++
			}
		}
		if before < 2 {
			t.Errorf("%s: %s: step %d: %d all-reduce(s) of %d queued before the last backward kernel (line %d): want "+
				"the gradient to go in buckets during the backward pass", mode, file, steps, before, len(hosts), lastBwd+1)
		} else if steps == 1 {
			t.Logf("%s: %s: step 1: %d of %d all-reduces queued before the last backward kernel", mode,
				filepath.Base(file), before, len(hosts))
		}
		if mode == "defer-streams" && (i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "run s1 ")) {
			t.Errorf("%s: %s: step %d: the communication stream's work did not run at Flush's wait (line %d)", mode,
				file, steps, i+1)
		}
	}
	if steps != 2 {
		t.Errorf("%s: %s: %d steps with all-reduces on the communication stream, want 2", mode, file, steps)
	}
}

// TestMPIBenchAndGuards: -bench under mpirun prints one aggregate bench line (rank 0); a binary built without MPI
// refuses to run under mpirun; a global batch that does not divide among the ranks is refused.
func TestMPIBenchAndGuards(t *testing.T) {
	k := mpiSetup(t)
	out := mustRunCmd(t, k.ranks(2, nil, []string{"-c", k.tiny, "-bench", "3", "-bench-warmup", "1"}))
	if n := strings.Count(out, "bench: "); n != 2 || !strings.Contains(out, "×2 ranks") { // the summary and the bench: line
		t.Errorf("bench output (want rank 0's two lines, ×2 ranks):\n%s", out)
	}
	plain := filepath.Join(k.tmp, "plain")
	if out, err := exec.Command(goTool(t), "build", "-o", plain, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := k.ranks(2, nil, []string{"-c", k.tiny})
	cmd.Args[len(cmd.Args)-3] = plain
	out, err := runCmd(t, cmd)
	if err == nil || !strings.Contains(out, "built without MPI") {
		t.Errorf("plain binary under mpirun: %v\n%s", err, out)
	}
	out, err = runCmd(t, k.ranks(3, nil, k.args(filepath.Join(k.tmp, "odd"))))
	if err == nil || !strings.Contains(out, "does not divide among 3 ranks") {
		t.Errorf("batch 16 on 3 ranks: %v\n%s", err, out)
	}
}
