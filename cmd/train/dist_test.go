package main

import (
	"strings"
	"testing"
	"time"
)

// TestOpenGroupUnderSrunWithoutMPI: a bin/train (either build) that srun started as several tasks without a PMI
// (plain `srun -n 2`, MpiDefault=none) refuses to run, naming srun --mpi=pmix, instead of training N times into the
// same run directory; one task of srun, or a batch script of `sbatch -n 2` (SLURM_NTASKS without a step), is one
// process.
func TestOpenGroupUnderSrunWithoutMPI(t *testing.T) {
	for _, c := range []struct {
		name   string
		env    map[string]string
		refuse bool
	}{
		{"srun -n 2", map[string]string{"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1"}, true},
		{"srun -n 1", map[string]string{"SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"}, false},
		{"sbatch -n 2 script", map[string]string{"SLURM_NTASKS": "2", "SLURM_PROCID": "0"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, v := range []string{"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "SLURM_STEP_NUM_TASKS"} {
				t.Setenv(v, "")
			}
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			g, err := openGroup(time.Minute)
			if c.refuse {
				if err == nil || !strings.Contains(err.Error(), "srun --mpi=pmix") {
					t.Fatalf("openGroup: %v, want a refusal naming srun --mpi=pmix", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g.size != 1 || g.rank != 0 || g.local != 0 {
				t.Errorf("rank %d of %d (local %d), want one process", g.rank, g.size, g.local)
			}
			g.close()
		})
	}
}
