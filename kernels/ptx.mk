# kernels/ptx.mk -- PTX for the cuda build (included by the top-level Makefile).
#
#   make ptx        nvcc -ptx for a pinned virtual architecture (compute_70: one PTX runs on V100, A100 and H100;
#                   nvcc 11.8 writes PTX ISA 7.8, so the GPU host's driver must be CUDA 11.8 or newer), one module per
#                   kernels/*.cu into kernels/ptx/ (committed, embedded by the cuda build); then ptxas compiles each
#                   module for sm_70, sm_80 and sm_90 and kernels/ptx/ptxas-report.txt keeps its register and spill
#                   report.
#   make ptx-check  the same into a temporary folder, and fails when the committed PTX differs from what nvcc makes
#                   now (a .cu edited without `make ptx`).
NVCC       ?= nvcc
PTXAS      ?= ptxas
PTX_ARCH   ?= compute_70
PTXAS_SMS  ?= sm_70 sm_80 sm_90


KERNEL_SRCS := $(wildcard kernels/*.cu)
KERNEL_HDRS := $(wildcard kernels/*.cuh)
KERNEL_PTX  := $(patsubst kernels/%.cu,kernels/ptx/%.ptx,$(KERNEL_SRCS))

.PHONY: ptx ptx-check

ptx: $(KERNEL_PTX) kernels/ptx/ptxas-report.txt

kernels/ptx/%.ptx: kernels/%.cu $(KERNEL_HDRS)
	@mkdir -p kernels/ptx
	$(NVCC) -ptx -arch=$(PTX_ARCH) -std=c++14 -O3 $< -o $@

kernels/ptx/ptxas-report.txt: $(KERNEL_PTX)
	@set -e; : > $@.tmp; \
	for p in $(KERNEL_PTX); do \
	  for sm in $(PTXAS_SMS); do \
	    echo "== $$p $$sm" >> $@.tmp; \
	    $(PTXAS) -arch=$$sm -v $$p -o /dev/null 2>> $@.tmp; \
	  done; \
	done; mv $@.tmp $@
	@grep -c "Used" $@ | sed 's/^/ptxas: kernels compiled (all sms): /'

ptx-check:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	for s in $(KERNEL_SRCS); do \
	  b=$$(basename $$s .cu); \
	  $(NVCC) -ptx -arch=$(PTX_ARCH) -std=c++14 -O3 $$s -o $$tmp/$$b.ptx; \
	  for sm in $(PTXAS_SMS); do $(PTXAS) -arch=$$sm $$tmp/$$b.ptx -o /dev/null; done; \
	  if ! cmp -s $$tmp/$$b.ptx kernels/ptx/$$b.ptx; then \
	    echo "kernels/ptx/$$b.ptx is stale: run make ptx"; exit 1; fi; \
	done; echo "ptx-check: $(words $(KERNEL_SRCS)) modules current, ptxas ok for $(PTXAS_SMS)"
