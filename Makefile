# Build, test and kernel targets. `make help` lists them.
#
# The default build is CPU + CUDA emulator and needs no CUDA toolkit. The GPU build
# (`make build-cuda`, Go build tag `cuda`) is chosen explicitly, never by detecting a
# toolkit: a binary linked with gorgonia.org/cu exits at start on a host without a
# GPU, so picking it because nvcc happens to be installed would break CPU users.

GO      ?= go
BIN     := bin
CMDS    := train sample pack export
# Link the cuda build against the driver stub when no libcuda is installed.
STUBS   ?= /usr/lib/x86_64-linux-gnu/stubs

.PHONY: all build build-cuda test test-short vet vet-cuda ptx ptx-check clean help

all: build

build: ## bin/train, bin/sample, bin/pack (CPU backend + emulator; no CUDA needed)
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

build-cuda: ## the same binaries with the real GPU driver (tag cuda; runs only on NVIDIA hosts)
	@mkdir -p $(BIN)
	CGO_LDFLAGS="$(CGO_LDFLAGS) -L$(STUBS)" $(GO) build -tags cuda -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

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
