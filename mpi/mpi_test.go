//go:build mpi

package mpi

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"regexp"
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
	checkRanks(t, out.String(), 3, "mpirun")
}

// TestSlurmSrun runs this test binary's TestRank tests on 3 tasks of `srun --mpi=pmix` (make test-slurm; a Slurm
// cluster such as scripts/slurm-local.sh sets up): MPI's ranks, size and local ranks are Slurm's, and the sums
// are those under mpirun. It fails (never skips) without srun.
func TestSlurmSrun(t *testing.T) {
	if comm != nil {
		t.Skip("already under a launcher")
	}
	srun, err := exec.LookPath("srun")
	if err != nil {
		t.Fatalf("srun not found: make test-slurm (scripts/slurm-local.sh up) sets up a one-node cluster: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// --overcommit: 3 tasks on the 2 CPUs of CI; --kill-on-bad-exit: a failed rank ends the others.
	cmd := exec.CommandContext(ctx, srun, "--mpi=pmix", "-n", "3", "--overcommit", "--kill-on-bad-exit=1",
		os.Args[0], "-test.run", "^TestRank", "-test.v")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	t.Logf("%s", out.String())
	if err != nil {
		t.Fatalf("srun: %v", err)
	}
	checkRanks(t, out.String(), 3, "srun")
}

// identityLine is what TestRankIdentity logs on each rank.
var identityLine = regexp.MustCompile(`identity: launcher=(\w+) rank=(\d+) size=(\d+) local=(\d+)`)

// checkRanks: the TestRank tests passed on n ranks, whose identities are ranks 0 … n−1 of n told by launcher.
func checkRanks(t *testing.T, out string, n int, launcher string) {
	t.Helper()
	for _, name := range []string{"TestRankSum", "TestRankHostCollectives", "TestRankIdentity"} {
		if c := strings.Count(out, "--- PASS: "+name+" "); c != n {
			t.Errorf("%s passed on %d ranks, want %d", name, c, n)
		}
	}
	seen := map[string]bool{}
	for _, m := range identityLine.FindAllStringSubmatch(out, -1) {
		if m[1] != launcher || m[3] != fmt.Sprint(n) {
			t.Errorf("%s: want launcher %s, size %d", m[0], launcher, n)
		}
		seen[m[2]] = true
	}
	for r := range n {
		if !seen[fmt.Sprint(r)] {
			t.Errorf("no rank %d among the identities %v", r, identityLine.FindAllString(out, -1))
		}
	}
}

// launcher is what the launcher told this process before MPI_Init (read when the package is initialised, before
// TestMain's Init): its name and the rank, size and local rank it gave. mpirun sets OMPI_COMM_WORLD_RANK, _SIZE and
// _LOCAL_RANK; a task of `srun --mpi=pmix` has SLURM_PROCID, SLURM_STEP_NUM_TASKS and SLURM_LOCALID (and, under
// mpirun inside an allocation, ranks inherit SLURM_ variables of the batch step, so mpirun's come first).
var launcher = func() (l struct {
	name              string
	rank, size, local string
}) {
	switch {
	case os.Getenv("OMPI_COMM_WORLD_RANK") != "":
		l.name = "mpirun"
		l.rank, l.size, l.local = os.Getenv("OMPI_COMM_WORLD_RANK"), os.Getenv("OMPI_COMM_WORLD_SIZE"),
			os.Getenv("OMPI_COMM_WORLD_LOCAL_RANK")
	case os.Getenv("SLURM_STEP_NUM_TASKS") != "":
		l.name = "srun"
		l.rank, l.size, l.local = os.Getenv("SLURM_PROCID"), os.Getenv("SLURM_STEP_NUM_TASKS"), os.Getenv("SLURM_LOCALID")
	}
	return l
}()

// TestRankIdentity: the rank, size and local rank MPI gives (MPI_Comm_rank, MPI_Comm_size, MPI_Comm_split_type) are
// those the launcher set in the environment, and PMIX_RANK, where set, is the rank. It logs them for checkRanks.
func TestRankIdentity(t *testing.T) {
	needComm(t)
	got := fmt.Sprintf("rank=%d size=%d local=%d", comm.Rank(), comm.Size(), comm.LocalRank())
	t.Logf("identity: launcher=%s %s", launcher.name, got)
	if launcher.name == "" {
		t.Fatalf("launched (%s) by neither mpirun nor srun: no OMPI_COMM_WORLD_RANK, no SLURM_STEP_NUM_TASKS", got)
	}
	if want := fmt.Sprintf("rank=%s size=%s local=%s", launcher.rank, launcher.size, launcher.local); got != want {
		t.Errorf("MPI says %s, %s says %s", got, launcher.name, want)
	}
	if p := os.Getenv("PMIX_RANK"); p != "" && p != fmt.Sprint(comm.Rank()) {
		t.Errorf("PMIX_RANK=%s, MPI rank %d", p, comm.Rank())
	}
	if comm.LocalSize() < 1 || comm.LocalRank() >= comm.LocalSize() {
		t.Errorf("local rank %d of %d", comm.LocalRank(), comm.LocalSize())
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
