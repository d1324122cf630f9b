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

import "os"

// Launched says whether this process was started by an MPI launcher: mpirun (OMPI_COMM_WORLD_SIZE, PMIX_RANK),
// or srun with PMIx or PMI-2 (PMIX_RANK, PMI_RANK). A process started otherwise runs as one rank without MPI.
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
