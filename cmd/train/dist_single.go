//go:build !mpi

package main

import (
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/ddpmgo/ddpm/mpi"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/train"
)

// openGroup is the one process of a build without MPI. Started by mpirun or srun, it refuses to run: every copy
// would train alone into the same run directory.
func openGroup(timeout time.Duration) (*group, error) {
	if mpi.Launched() {
		return nil, errors.New("this bin/train was built without MPI but was started by an MPI launcher (mpirun, srun): " +
			"each process would train alone into the same run directory. Build it with make build-mpi")
	}
	if n := mpi.SlurmTasks(); n > 1 {
		return nil, fmt.Errorf("srun started %d copies of a bin/train built without MPI; build it with make build-mpi and start it with srun --mpi=pmix", n)
	}
	g := &group{size: 1, col: train.Single{}, name: "single", abort: func(int) {}}
	g.bind = func(_ string, _ ops.Backend, which string, _ *zap.Logger) error {
		if which != "auto" && which != "mpi" {
			return fmt.Errorf("-collective %s needs a binary built with MPI (make build-mpi)", which)
		}
		return nil
	}
	return g, nil
}
