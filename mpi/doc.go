// Package mpi runs data-parallel training over MPI (Open MPI; Debian's openmpi-bin and libopenmpi-dev): a process
// started by `mpirun -np N` (or by Slurm's `srun --mpi=pmix`) learns its rank, the number of ranks and its rank on
// its machine from MPI, and Comm is the trainer's collective (train.Collective) over MPI_COMM_WORLD.
//
// The MPI code is cgo (pkg-config ompi-c) behind the build tag mpi (`make build-mpi`); without the tag the package
// holds only Launched, so that the default build, its tests and the quick start need no MPI.
//
// # Collectives
//
// One goroutine, locked to the OS thread that called MPI_Init_thread, makes every MPI call of the trainer: the
// trainer queues its gradient buckets and returns to the backward pass while they are reduced (Comm.AllReduceSum),
// and waits for them in Flush. Each collective is non-blocking (MPI_Ialltoallv, MPI_Iallgatherv, MPI_Iallreduce,
// MPI_Ibcast) and polled, so that
//
//   - a sum of float32 is the same bits on every rank and from run to run, for any N: the buffer is cut into N
//     chunks, rank j receives everyone's chunk j (MPI_Ialltoallv), adds them in rank order, ((x_0 + x_1) + x_2) …,
//     and the sums are gathered everywhere (MPI_Iallgatherv). It moves 2·(N−1)/N of the buffer per rank, as a ring
//     all-reduce does, without depending on which algorithm the MPI library picks;
//   - a collective that does not complete within the watchdog's timeout (Options.Timeout) fails instead of waiting
//     for ever. The rank that times out first asks every other rank, on a communicator of its own, where it is; each
//     rank's MPI goroutine answers even while its trainer computes, so the error names the ranks that do not answer
//     (hung, stopped or dead) and those that answer but have not reached the collective;
//   - errors come back as errors (MPI_ERRORS_RETURN) naming the operation.
//
// A rank that dies is noticed by mpirun itself, which names it ("mpirun noticed that process rank 1 … exited on
// signal 9") and ends the others. Comm.Abort (MPI_Abort) ends every rank at once: bin/train calls it after an
// error, so that no rank waits on one that has stopped.
package mpi

import (
	"fmt"
	"os"
)

// Launched says whether this process was started by an MPI launcher: mpirun (OMPI_COMM_WORLD_SIZE, PMIX_RANK),
// or srun with PMIx or PMI-2 (PMIX_RANK, PMI_RANK). A process started otherwise runs as one rank without MPI.
//
// What each launcher sets (tried with Slurm 22.05 and Open MPI 4.1.4, docs/distributed.md): mpirun sets
// OMPI_COMM_WORLD_{SIZE,RANK,LOCAL_RANK} and PMIX_RANK; `srun --mpi=pmix` sets PMIX_RANK and SLURM_PROCID,
// SLURM_LOCALID, SLURM_STEP_NUM_TASKS; `srun --mpi=pmi2` sets PMI_RANK (Debian's Open MPI has no PMI-2 client, so
// MPI_Init_thread then fails with Open MPI's own message); a plain `srun` (MpiDefault=none) sets only the SLURM_
// variables, so Launched is false and SlurmTasks tells several such tasks apart from one process.
func Launched() bool {
	for _, v := range []string{"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"} {
		if os.Getenv(v) != "" {
			return true
		}
	}
	return false
}

// SlurmTasks is the number of tasks of the Slurm job step this process belongs to (SLURM_STEP_NUM_TASKS), 0
// outside Slurm: more than one without Launched means srun started several copies without an MPI plugin.
// SLURM_NTASKS is not used: a batch script of `sbatch -n 2` and the shell of `salloc -n 2` have SLURM_NTASKS=2 but
// are one process (the batch step has no SLURM_STEP_NUM_TASKS), and mpirun inside them is the way to start ranks.
func SlurmTasks() int {
	n := 0
	for _, c := range os.Getenv("SLURM_STEP_NUM_TASKS") {
		if c < '0' || c > '9' {
			return 0
		}
		n = 10*n + int(c-'0')
	}
	return n
}

// CheckSlurm is the check after MPI_Init: it fails when srun started several tasks (SlurmTasks > 1) and MPI sees a
// world of one rank, as an MPI library that does not speak srun's PMI and falls back to singletons would (each task
// would train alone into the same run directory; Open MPI 4.1.4 fails in MPI_Init instead). A world of more than
// one rank passes whatever SLURM_STEP_NUM_TASKS says: under mpirun inside an allocation, ranks on other machines
// inherit it from the srun step that started Open MPI's daemons (one task per machine).
func CheckSlurm(size int) error {
	if n := SlurmTasks(); n > 1 && size == 1 {
		return fmt.Errorf("srun started %d tasks but MPI sees a world of 1 rank in each: every task would train alone. "+
			"Start them with srun --mpi=pmix (srun --mpi=list shows the plugins), or with mpirun inside salloc or sbatch", n)
	}
	return nil
}
