# kernels/ptx.mk -- PTX for the cuda build (included by the top-level Makefile).
#
# The work is done by scripts/ptx.sh, which decides by content, not by file times: git does not keep modification
# times, so in a fresh clone every .cu can look newer than the committed PTX. kernels/ptx/SOURCES.sha256 records the
# hashes of each module's inputs (its .cu and the headers it includes), its nvcc flags and the PTX written; the
# script's header describes the modules (kernels/ptx/*.ptx for compute_70, kernels/ptx/sm80/conv2d.ptx for
# compute_80) and the checks. NVCC and PTXAS name the tools (`make ptx NVCC=/opt/cuda/bin/nvcc`).
NVCC  ?= nvcc
PTXAS ?= ptxas

.PHONY: ptx ptx-check

ptx: ## bin/ (as make build), then PTX of the kernels/*.cu whose content changed (nvcc); without nvcc: check that the committed PTX is current
	@NVCC="$(NVCC)" PTXAS="$(PTXAS)" scripts/ptx.sh build

ptx-check: ## (CI, nvcc) recompile all PTX to a temp dir, fail if the committed PTX or manifest differs; ptxas sm_70/80/90
	@NVCC="$(NVCC)" PTXAS="$(PTXAS)" scripts/ptx.sh check
