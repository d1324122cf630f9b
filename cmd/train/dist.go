package main

import (
	"go.uber.org/zap"

	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/train"
)

// group is this process's place in a data-parallel run (dist_mpi.go with -tags mpi, dist_single.go without): the
// collective the trainer uses, the ranks, and how to end them.
type group struct {
	rank, size, local int
	col               train.Collective
	name              string         // the collective, for the log: "single", "mpi", "nccl 2.18.3"
	abort             func(code int) // ends every rank at once (after an error on this one)
	closers           []func() error // in order, at a clean end
	bind              func(dev string, be ops.Backend, which string, log *zap.Logger) error
}

// close releases the collective (NCCL, then MPI) at a clean end.
func (g *group) close() error {
	var first error
	for _, c := range g.closers {
		if err := c(); err != nil && first == nil {
			first = err
		}
	}
	g.closers = nil
	return first
}
