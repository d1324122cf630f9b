package mpi

import (
	"strings"
	"testing"
)

// launcherEnv clears every variable Launched, SlurmTasks and CheckSlurm read (this test may itself run inside a
// Slurm step or under mpirun), then sets env: what a process sees when each launcher starts it (the variables
// recorded under Slurm 22.05 and Open MPI 4.1.4, docs/distributed.md).
func launcherEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for _, v := range []string{"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "SLURM_STEP_NUM_TASKS"} {
		t.Setenv(v, "")
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
}

func TestLaunchedAndSlurmTasks(t *testing.T) {
	for _, c := range []struct {
		name     string
		env      map[string]string
		launched bool
		tasks    int
		refuse   bool // CheckSlurm(1) fails
	}{
		{"no launcher", nil, false, 0, false},
		{"mpirun", map[string]string{"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1", "PMIX_RANK": "1"}, true, 0, false},
		{"srun --mpi=pmix -n 2", map[string]string{"PMIX_RANK": "1", "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2"}, true, 2, true},
		{"srun --mpi=pmi2 -n 2", map[string]string{"PMI_RANK": "0", "SLURM_STEP_NUM_TASKS": "2"}, true, 2, true},
		{"srun -n 2 (no MPI plugin)", map[string]string{"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "2"}, false, 2, true},
		{"srun -n 1", map[string]string{"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1"}, false, 1, false},
		// The batch script of sbatch -n 2 and the shell of salloc -n 2: one process, no step variables.
		{"sbatch -n 2 script", map[string]string{"SLURM_NTASKS": "2", "SLURM_PROCID": "0"}, false, 0, false},
		{"garbage", map[string]string{"SLURM_STEP_NUM_TASKS": "2x"}, false, 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			launcherEnv(t, c.env)
			if got := Launched(); got != c.launched {
				t.Errorf("Launched() = %v, want %v", got, c.launched)
			}
			if got := SlurmTasks(); got != c.tasks {
				t.Errorf("SlurmTasks() = %d, want %d", got, c.tasks)
			}
			err := CheckSlurm(1)
			if (err != nil) != c.refuse {
				t.Errorf("CheckSlurm(1) = %v, want an error: %v", err, c.refuse)
			}
			if err != nil && !strings.Contains(err.Error(), "srun --mpi=pmix") {
				t.Errorf("CheckSlurm(1): %v does not name srun --mpi=pmix", err)
			}
			if err := CheckSlurm(2); err != nil {
				t.Errorf("CheckSlurm(2) = %v: a world of 2 ranks is a data-parallel run", err)
			}
		})
	}
}
