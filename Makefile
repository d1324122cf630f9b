# Build, test and kernel targets. `make help` lists them.
#
# The default build is CPU + CUDA emulator and needs no CUDA toolkit. The GPU build
# (`make build-cuda`, Go build tag `cuda`) is chosen explicitly, never by detecting a
# toolkit: a binary linked with gorgonia.org/cu exits at start on a host without a
# GPU, so picking it because nvcc happens to be installed would break CPU users.

GO      ?= go
BIN     := bin
CMDS    := train sample pack export eval
# Link the cuda build against the driver stub when no libcuda is installed.
STUBS   ?= /usr/lib/x86_64-linux-gnu/stubs

.PHONY: all build build-cuda build-mpi test test-short test-mpi test-slurm vet vet-cuda fake-nccl ptx ptx-check gpu-report gpu-report-check clean help

all: build

build: ## bin/train, bin/sample, bin/pack, bin/eval (CPU backend + emulator; no CUDA needed)
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

# The Slurm tier, apart from make test and make test-mpi (.ci/run runs it after them): package mpi's TestRank tests
# on 3 tasks of `srun --mpi=pmix` (MPI's rank, size and local rank are Slurm's), bin/train on 2 ranks started by
# srun --mpi=pmix, salloc + mpirun and sbatch (bit-identical to mpirun -np 2), and the refusals of srun without PMIx.
# 45 to 90 s on 2 CPUs. SLURM_UP first sets up the one-node cluster of scripts/slurm-local.sh (root; idempotent); on
# a machine that is already part of a Slurm cluster, run make test-slurm SLURM_UP=true.
SLURM_UP ?= scripts/slurm-local.sh up

test-slurm: ## bin/train under Slurm: srun --mpi=pmix, salloc/sbatch + mpirun (a one-node cluster: scripts/slurm-local.sh up, as root)
	$(SLURM_UP)
	$(GO) vet -tags mpi ./...
	$(MPI_ENV) $(GO) test -tags mpi -count=1 -timeout 10m ./mpi/ ./cmd/train/ -run 'Slurm'

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

gpu-report: ## docs/gpu-perf.md: each kernel's SASS (sm_80, sm_90), occupancy, main-loop mix; the celeba32 step's H100 roofline (ptxas, nvdisasm)
	$(GO) run ./cmd/gpureport

gpu-report-check: ## (CI, ptxas + nvdisasm) regenerate docs/gpu-perf.md and fail if the committed one differs
	$(GO) run ./cmd/gpureport -check

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

# The emulated CUDA driver: libcuda.so.1 over the CPU emulator, so that the cuda build runs without a GPU
# (kernels/emu/driver/README.md). Run a cuda-tagged binary with LD_LIBRARY_PATH=$(EMUDRV_DIR).
CXX         ?= g++
EMUDRV_DIR  := $(BIN)/emudriver
EMUDRV      := $(EMUDRV_DIR)/libcuda.so.1
EMUDRV_SRC  := kernels/emu/driver
EMUDRV_FLAGS ?= -O2 -g -std=c++17 -fPIC -fvisibility=hidden -fno-strict-aliasing -Wall -Wno-unused-variable \
	-Wno-unused-function
EMU_ORDERS  ?= reverse random:1 random:2

.PHONY: emu-driver emu-driver-symbols test-emu-driver test-emu-orders test-emu-gpu test-emu-all

emu-driver: $(EMUDRV) ## bin/emudriver/libcuda.so.1: the CUDA driver API over the CPU emulator (for the cuda build without a GPU)

$(EMUDRV): $(wildcard $(EMUDRV_SRC)/*.cpp $(EMUDRV_SRC)/*.h) $(EMUDRV_SRC)/symbols.txt $(EMUDRV_SRC)/exports.map \
		$(wildcard kernels/*.cu kernels/*.cuh kernels/emu/*.h kernels/emu/*.cu) Makefile
	@mkdir -p $(EMUDRV_DIR)
	sed 's/.*/EMU_STUB(&)/' $(EMUDRV_SRC)/symbols.txt > $(EMUDRV_DIR)/symbols.inc
	for f in $(sort $(wildcard kernels/*.cu)); do echo "#include \"$(CURDIR)/$$f\""; done > $(EMUDRV_DIR)/kernels.inc
	$(CXX) $(EMUDRV_FLAGS) -I$(EMUDRV_DIR) -shared -Wl,-soname,libcuda.so.1 -Wl,--no-undefined \
		-Wl,--version-script=$(EMUDRV_SRC)/exports.map -o $@.tmp \
		$(EMUDRV_SRC)/kernels.cpp $(EMUDRV_SRC)/driver.cpp $(EMUDRV_SRC)/stubs.cpp -lpthread
	mv $@.tmp $@

emu-driver-symbols: ## regenerate kernels/emu/driver/symbols.txt: the driver functions gorgonia.org/cu links
	CGO_LDFLAGS="$(CGO_LDFLAGS) -L$(STUBS)" $(GO) test -c -tags cuda -o $(EMUDRV_DIR)/cuda.test ./cuda/
	nm -D --undefined-only $(EMUDRV_DIR)/cuda.test | awk '$$2 ~ /^cu/ {print $$2}' | sort > $(EMUDRV_SRC)/symbols.txt
	@wc -l < $(EMUDRV_SRC)/symbols.txt | sed 's/^/emu-driver-symbols: /; s/$$/ symbols/'

test-emu-driver: emu-driver ## the cuda-tagged tests of ./cuda/ on the emulated driver, at compute capability 7.0 and 9.0
	for cc in 7.0 9.0; do \
	  DDPM_EMU_CC=$$cc LD_LIBRARY_PATH=$(CURDIR)/$(EMUDRV_DIR) CGO_LDFLAGS="$(CGO_LDFLAGS) -L$(STUBS)" \
	    $(GO) test -count=1 -tags cuda ./cuda/ || exit 1; \
	done

test-emu-gpu: emu-driver ## the cuda build end to end on the emulated driver: train's GPU step parity at CC 7.0 and 9.0, then bin/train and bin/sample (bit for bit -device emu, kill -9 and resume, cross-device resume, injected faults)
	for cc in 7.0 9.0; do \
	  DDPM_EMU_CC=$$cc LD_LIBRARY_PATH=$(CURDIR)/$(EMUDRV_DIR) CGO_LDFLAGS="$(CGO_LDFLAGS) -L$(STUBS)" \
	    $(GO) test -count=1 -tags cuda -run CUDA ./train/ || exit 1; \
	done
	CI=1 $(GO) test -count=1 -timeout 40m -tags e2e -run TestBinaries -v ./kernels/emu/driver/drivertest/

test-emu-all: test-emu-driver test-emu-orders test-emu-gpu ## everything the emulated GPU checks (what .ci/run adds to make test)

test-emu-orders: ## go test ./cuda/ with the emulator running block threads in reverse and random orders
	for o in $(EMU_ORDERS); do \
	  echo "== DDPM_EMU_ORDER=$$o"; DDPM_EMU_ORDER=$$o $(GO) test -count=1 ./cuda/ || exit 1; \
	done

help:
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'
