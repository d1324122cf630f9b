//go:build mpi

package mpi

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ddpmgo/ddpm/backend"
	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/rng"
)

// comm is the process's Comm when the test binary runs under mpirun (TestMain), nil otherwise.
var comm *Comm

// TestMain: under mpirun (TestMPIUnderMpirun starts it so) every rank runs the TestRank tests on one Comm; otherwise
// the tests run as usual and TestMPIUnderMpirun launches the ranks.
func TestMain(m *testing.M) {
	if !Launched() {
		os.Exit(m.Run())
	}
	var err error
	if comm, err = Init(Options{Timeout: time.Minute}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if code != 0 {
		comm.Abort(code)
	}
	if err := comm.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(code)
}

// mpirunArgs is the launcher's command line for n ranks on this machine (oversubscribed: CI has 2 cores; as root,
// Open MPI wants OMPI_ALLOW_RUN_AS_ROOT set).
func mpirunArgs(n int) []string {
	return []string{"--oversubscribe", "-np", fmt.Sprint(n), "--bind-to", "none"}
}

func mpirunEnv() []string {
	return append(os.Environ(), "OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1", "OMPI_MCA_btl=self,vader,tcp")
}

// TestMPIUnderMpirun runs this test binary's TestRank tests on 3 ranks. It fails (never skips) without mpirun: the
// mpi build's tests are the ones that need it.
func TestMPIUnderMpirun(t *testing.T) {
	if comm != nil {
		t.Skip("already under mpirun")
	}
	mpirun, err := exec.LookPath("mpirun")
	if err != nil {
		t.Fatalf("mpirun not found (scripts/setup.sh --mpi installs Open MPI): %v", err)
	}
	cmd := exec.Command(mpirun, append(mpirunArgs(3), os.Args[0], "-test.run", "^TestRank", "-test.v")...)
	cmd.Env = mpirunEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	t.Logf("%s", out.String())
	if err != nil {
		t.Fatalf("mpirun: %v", err)
	}
	if n := strings.Count(out.String(), "--- PASS: TestRankSum"); n != 3 {
		t.Fatalf("TestRankSum passed on %d ranks, want 3", n)
	}
}

func needComm(t *testing.T) {
	if comm == nil {
		t.Skip("runs on the ranks that TestMPIUnderMpirun starts")
	}
}

// data is rank r's buffer of n floats in test k: normals of a size that make the sums inexact.
func data(k, r, n int) []float32 {
	x := make([]float32, n)
	rng.FillNormal(x, uint64(100+k), uint32(r), 0)
	for i := range x {
		x[i] *= float32(1 + i%7)
	}
	return x
}

// TestRankSum: the sum of every size (small and chunked, with chunks of 0 elements) is the rank-order sum, bit for
// bit, on every rank; buffers of the CPU backend are summed in place, those of another backend (the emulator)
// through the host.
func TestRankSum(t *testing.T) {
	needComm(t)
	N := comm.Size()
	backends := []ops.Backend{cpu.New()}
	if emu, closeEmu, err := backend.Open("emu", config.Device{}, nil); err == nil { // not in builds with -tags cuda
		defer closeEmu()
		backends = append(backends, emu)
	}
	for k, n := range []int{1, 2, 5, smallPerRank * N, smallPerRank*N + 1, 1000, 100003} {
		want := data(k, 0, n)
		for r := 1; r < N; r++ {
			for i, v := range data(k, r, n) {
				want[i] += v
			}
		}
		for _, be := range backends {
			comm.Bind(be)
			buf := be.Alloc(n)
			be.Upload(buf, data(k, comm.Rank(), n))
			comm.AllReduceSum(buf)
			if err := comm.Flush(); err != nil {
				t.Fatal(err)
			}
			got := make([]float32, n)
			be.Download(got, buf)
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("%s, %d floats: element %d = %v, rank-order sum %v", be.Name(), n, i, got[i], want[i])
				}
			}
		}
	}
	host := data(9, comm.Rank(), 300)
	if err := comm.SumFloat32(host); err != nil {
		t.Fatal(err)
	}
	want := data(9, 0, 300)
	for r := 1; r < N; r++ {
		for i, v := range data(9, r, 300) {
			want[i] += v
		}
	}
	for i := range want {
		if host[i] != want[i] {
			t.Fatalf("SumFloat32: element %d = %v, want %v", i, host[i], want[i])
		}
	}
}

// TestRankHostCollectives: MaxInt64, BroadcastBytes and Broadcast; several queued buffers in one Flush.
func TestRankHostCollectives(t *testing.T) {
	needComm(t)
	r, N := comm.Rank(), comm.Size()
	x := []int64{int64(r), int64(-r), 7}
	if err := comm.MaxInt64(x); err != nil {
		t.Fatal(err)
	}
	if x[0] != int64(N-1) || x[1] != 0 || x[2] != 7 {
		t.Fatalf("MaxInt64: %v", x)
	}
	b := []byte(fmt.Sprintf("from rank %d", r))
	if err := comm.BroadcastBytes(b); err != nil || string(b) != "from rank 0" {
		t.Fatalf("BroadcastBytes: %q, %v", b, err)
	}
	be := cpu.New()
	comm.Bind(be)
	bufs := []ops.Buf{be.Alloc(3), be.Alloc(200000)}
	for _, buf := range bufs {
		be.Fill(buf, float32(r+1))
		comm.Broadcast(buf)
	}
	sum := be.Alloc(5)
	be.Fill(sum, 1)
	comm.AllReduceSum(sum)
	if err := comm.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, buf := range bufs {
		if v := cpu.Data[float32](buf); v[0] != 1 || v[len(v)-1] != 1 {
			t.Fatalf("Broadcast: %v … %v, want rank 0's 1", v[0], v[len(v)-1])
		}
	}
	if v := cpu.Data[float32](sum); v[4] != float32(N) {
		t.Fatalf("AllReduceSum of ones: %v", v)
	}
	if comm.LocalSize() != N || comm.LocalRank() != r {
		t.Errorf("local rank %d of %d on one machine, want %d of %d", comm.LocalRank(), comm.LocalSize(), r, N)
	}
}
