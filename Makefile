# Build, test and kernel targets. `make help` lists them.
#
# The default build is CPU + CUDA emulator and needs no CUDA toolkit. The GPU build
# (`make build-cuda`, Go build tag `cuda`) is chosen explicitly, never by detecting a
# toolkit: a binary linked with gorgonia.org/cu exits at start on a host without a
# GPU, so picking it because nvcc happens to be installed would break CPU users.

GO      ?= go
BIN     := bin
CMDS    := train sample pack
# Link the cuda build against the driver stub when no libcuda is installed.
STUBS   ?= /usr/lib/x86_64-linux-gnu/stubs

.PHONY: all build build-cuda build-mpi test test-short test-mpi vet vet-cuda fake-nccl ptx ptx-check clean help

all: build

build: ## bin/train, bin/sample, bin/pack (CPU backend + emulator; no CUDA needed)
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

build-cuda: ## the same binaries with the real GPU driver (tag cuda; runs only on NVIDIA hosts)
	@mkdir -p $(BIN)
	CGO_LDFLAGS="$(CGO_LDFLAGS) -L$(STUBS)" $(GO) build -tags cuda -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

build-mpi: ## the same binaries with data-parallel training over Open MPI (tag mpi; scripts/setup.sh --mpi): mpirun -np N bin/train
	@mkdir -p $(BIN)
	$(GO) build -tags mpi -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

# The MPI tier: vet the mpi-tagged code, then the tests that run mpirun (package mpi on 3 ranks; bin/train on 2 and 3
# ranks: equal to one process, bit-identical, resume across rank counts, a killed and a hung rank, the NCCL path on
# the emulator with the NCCL test double, -bench). They fail, never skip, without mpirun or Fashion-MNIST.
MPI_ENV := OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

test-mpi: ## vet and test the MPI build (needs scripts/setup.sh --mpi; what CI runs after make test)
	$(GO) vet -tags mpi ./...
	$(MPI_ENV) $(GO) test -tags mpi -count=1 -timeout 20m ./mpi/ ./cmd/train/ -run 'MPI'

fake-nccl: $(BIN)/fakenccl/libnccl.so.2 ## the NCCL test double over MPI: LD_LIBRARY_PATH=bin/fakenccl mpirun … -device emu -collective nccl

$(BIN)/fakenccl/libnccl.so.2: cuda/nccl/testdata/fakenccl.c
	@mkdir -p $(BIN)/fakenccl
	mpicc -O2 -shared -fPIC -o $@ $<

test: ## vet and the whole test suite (what CI runs)
	$(GO) vet ./...
	$(GO) test ./...

vet-cuda: ## vet and build the cuda-tagged code against the driver stub
	CGO_LDFLAGS="$(CGO_LDFLAGS) -L$(STUBS)" $(GO) vet -tags cuda ./...
	CGO_LDFLAGS="$(CGO_LDFLAGS) -L$(STUBS)" $(GO) build -tags cuda ./...

# ptx, ptx-check: the committed PTX of kernels/*.cu (see kernels/ptx.mk).
include kernels/ptx.mk

# The design's one command, `make ptx && ./bin/train -c configs/celeba32.toml`, needs the binaries as well: in the
# repository, ptx builds them first (the kernels tests run the PTX part alone on copies of kernels/, without go.mod).
ifneq ($(wildcard go.mod),)
ptx: build
endif

clean: ## remove binaries and test caches
	rm -rf $(BIN)
	$(GO) clean -testcache

help:
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'
