//go:build mpi

package main

// bin/train under Slurm (make test-slurm: go test -tags mpi -run Slurm ./mpi/ ./cmd/train/, on a cluster such as
// the one-node cluster of scripts/slurm-local.sh). Not part of make test-mpi: they fail, never skip, without srun.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// slurmTimeout bounds every srun, salloc and sbatch here (a run takes seconds; a queued job would wait for ever).
const slurmTimeout = 3 * time.Minute

// slurmSetup is mpiSetup with srun, salloc and sbatch found and the config path made absolute (sbatch's script
// runs in the job's directory).
func slurmSetup(t *testing.T) *mpiKit {
	t.Helper()
	for _, c := range []string{"srun", "salloc", "sbatch"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s not found: make test-slurm (scripts/slurm-local.sh up) sets up a one-node Slurm cluster: %v", c, err)
		}
	}
	k := mpiSetup(t)
	abs, err := filepath.Abs(k.tiny)
	if err != nil {
		t.Fatal(err)
	}
	k.tiny = abs
	return k
}

// slurm is a Slurm command (srun, salloc, sbatch) with args, one thread per rank, Open MPI allowed to run as root,
// ended after slurmTimeout.
func slurm(t *testing.T, name string, args ...string) *exec.Cmd {
	ctx, cancel := context.WithTimeout(context.Background(), slurmTimeout)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(append(os.Environ(), mpiEnv...), "GOMAXPROCS=1")
	return cmd
}

// srunArgs: n tasks of bin with PMIx, overcommitted (CI has 2 CPUs), the others killed when one fails.
func srunArgs(mpiPlugin string, n int, bin string, args []string) []string {
	return append([]string{"--mpi=" + mpiPlugin, "-n", fmt.Sprint(n), "--overcommit", "--kill-on-bad-exit=1", bin}, args...)
}

// twoRanks is in rank 0's "data parallel" line of a 2-rank run (-log-format json).
const twoRanks = `"ranks":2,"local_rank":0`

func wantTwoRanks(t *testing.T, what, out string) {
	t.Helper()
	if !strings.Contains(out, twoRanks) {
		t.Fatalf("%s: no 2-rank run:\n%s", what, out)
	}
}

// TestSlurmLaunchers: configs/tiny.toml (dropout, flips) for 20 steps on 2 ranks started by `srun --mpi=pmix -n 2`,
// by `salloc -n 2 mpirun` and by `sbatch -n 2` with mpirun and with srun --mpi=pmix inside, ends in the checkpoint
// of `mpirun -np 2`, bit for bit.
func TestSlurmLaunchers(t *testing.T) {
	k := slurmSetup(t)
	table, _, _ := tinyTable(t, k)
	ref := filepath.Join(k.tmp, "mpirun")
	wantTwoRanks(t, "mpirun -np 2", mustRunCmd(t, k.ranks(2, nil, k.args(ref))))
	want := state(t, table, ref, 20)

	dir := filepath.Join(k.tmp, "srun")
	wantTwoRanks(t, "srun --mpi=pmix -n 2", mustRunCmd(t, slurm(t, "srun", srunArgs("pmix", 2, k.bin, k.args(dir))...)))
	sameStates(t, "srun --mpi=pmix -n 2 vs mpirun -np 2", state(t, table, dir, 20), want)

	// mpirun without -np takes the allocation's 2 slots.
	dir = filepath.Join(k.tmp, "salloc")
	out := mustRunCmd(t, slurm(t, "salloc", append([]string{"-n", "2", "mpirun", "--bind-to", "none", "-x", "GOMAXPROCS", k.bin},
		k.args(dir)...)...))
	wantTwoRanks(t, "salloc -n 2 mpirun", out)
	sameStates(t, "salloc -n 2 mpirun vs mpirun -np 2", state(t, table, dir, 20), want)

	script := filepath.Join(k.tmp, "job.sh")
	log := filepath.Join(k.tmp, "job.out")
	q := func(args []string) string { return "'" + strings.Join(args, "' '") + "'" }
	a, b := filepath.Join(k.tmp, "sbatch-mpirun"), filepath.Join(k.tmp, "sbatch-srun")
	body := fmt.Sprintf("#!/bin/sh\nset -e\nmpirun --bind-to none -x GOMAXPROCS %s %s\nsrun %s\n", k.bin, q(k.args(a)),
		q(srunArgs("pmix", 2, k.bin, k.args(b))))
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	// -W: sbatch waits for the job and exits with its status.
	if out, err := runCmd(t, slurm(t, "sbatch", "-W", "-n", "2", "-o", log, script)); err != nil {
		job, _ := os.ReadFile(log)
		t.Fatalf("sbatch: %v\n%s\njob output:\n%s", err, out, job)
	}
	job, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if c := strings.Count(string(job), twoRanks); c != 2 {
		t.Fatalf("sbatch: %d 2-rank runs in the job's output, want 2 (mpirun, srun):\n%s", c, job)
	}
	sameStates(t, "sbatch -n 2 mpirun vs mpirun -np 2", state(t, table, a, 20), want)
	sameStates(t, "sbatch -n 2 srun --mpi=pmix vs mpirun -np 2", state(t, table, b, 20), want)
}

// TestSlurmGuards: what srun does with a bin/train that cannot run as one data-parallel job. None of them may end
// as two 1-rank runs into the same directory:
//   - `srun -n 2` without an MPI plugin (MpiDefault=none): bin/train refuses, naming srun --mpi=pmix;
//   - `srun --mpi=pmix -n 2` of a bin/train built without MPI: it refuses, naming make build-mpi;
//   - `srun --mpi=pmi2 -n 2`: Debian's Open MPI has no PMI-2 client and MPI_Init_thread fails with its own message
//     (an Open MPI that has one would run 2 ranks, which passes too).
func TestSlurmGuards(t *testing.T) {
	k := slurmSetup(t)
	plain := filepath.Join(k.tmp, "plain")
	if out, err := exec.Command(goTool(t), "build", "-o", plain, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, c := range []struct {
		name, plugin, bin, want, show string
	}{
		{"srun -n 2 (--mpi=none)", "none", k.bin, "srun --mpi=pmix", "srun --mpi=pmix"},
		{"srun --mpi=pmix -n 2, built without MPI", "pmix", plain, "make build-mpi", "make build-mpi"},
		{"srun --mpi=pmi2 -n 2", "pmi2", k.bin, "", "PMI support"},
	} {
		dir := filepath.Join(k.tmp, strings.NewReplacer(" ", "_", "/", "_").Replace(c.name))
		out, err := runCmd(t, slurm(t, "srun", srunArgs(c.plugin, 2, c.bin, k.args(dir))...))
		if err == nil && c.want == "" && strings.Contains(out, twoRanks) {
			t.Logf("%s: ran as 2 ranks", c.name)
			continue
		}
		if err == nil {
			t.Errorf("%s: exit 0, want a refusal:\n%s", c.name, out)
		}
		if !strings.Contains(out, c.want) {
			t.Errorf("%s: the output does not say %q:\n%s", c.name, c.want, out)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s: a run directory was written (%v)", c.name, err)
		}
		t.Logf("%s: %v; %s", c.name, err, firstLine(out, c.show))
	}
}

// firstLine is the first line of out that holds s.
func firstLine(out, s string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) && strings.TrimSpace(l) != "" {
			return strings.TrimSpace(l)
		}
	}
	return ""
}
