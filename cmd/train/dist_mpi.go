//go:build mpi

package main

import (
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/ddpmgo/ddpm/cuda"
	"github.com/ddpmgo/ddpm/cuda/nccl"
	"github.com/ddpmgo/ddpm/mpi"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/train"
)

// openGroup joins the MPI job when mpirun or srun started this process (MPI_Init_thread; rank, size and local rank
// from MPI) and is one process otherwise, without MPI.
func openGroup(timeout time.Duration) (*group, error) {
	if !mpi.Launched() {
		if n := mpi.SlurmTasks(); n > 1 {
			return nil, fmt.Errorf("srun started %d tasks without an MPI plugin: each would train alone; start them with srun --mpi=pmix", n)
		}
		g := &group{size: 1, col: train.Single{}, name: "single", abort: func(int) {}}
		g.bind = func(_ string, _ ops.Backend, which string, _ *zap.Logger) error {
			if which == "nccl" {
				return fmt.Errorf("-collective nccl: this process was not started by mpirun or srun (one rank)")
			}
			return nil
		}
		return g, nil
	}
	comm, err := mpi.Init(mpi.Options{Timeout: timeout})
	if err != nil {
		return nil, err
	}
	if err := mpi.CheckSlurm(comm.Size()); err != nil {
		comm.Close()
		return nil, err
	}
	g := &group{rank: comm.Rank(), size: comm.Size(), local: comm.LocalRank(), col: comm, name: "mpi", abort: comm.Abort,
		closers: []func() error{comm.Close}}
	g.bind = func(dev string, be ops.Backend, which string, log *zap.Logger) error {
		comm.Bind(be)
		if which == "auto" {
			which = "mpi"
			if dev == "cuda" {
				which = "nccl"
			}
		}
		switch which {
		case "mpi":
			return nil
		case "nccl":
			cb, ok := be.(*cuda.Backend)
			if !ok {
				return fmt.Errorf("-collective nccl needs -device cuda or emu, not %s", dev)
			}
			nc, err := nccl.New(comm, cb)
			if err != nil {
				return err
			}
			g.col, g.name = nc, fmt.Sprintf("nccl %d.%d.%d", nc.Version()/10000, nc.Version()/100%100, nc.Version()%100)
			g.closers = append([]func() error{nc.Close}, g.closers...)
			return nil
		}
		return fmt.Errorf("-collective %q: allowed: auto, mpi, nccl", which)
	}
	return g, nil
}
