# kernels/ptx.mk -- PTX for the cuda build (included by the top-level Makefile).
#
#   make ptx        nvcc -ptx for a pinned virtual architecture (compute_70: one PTX runs on V100, A100 and H100;
#                   nvcc 11.8 writes PTX ISA 7.8, so the GPU host's driver must be CUDA 11.8 or newer), one module per
#                   kernels/*.cu into kernels/ptx/ (committed, embedded by the cuda build); then ptxas compiles each
#                   module for sm_70, sm_80 and sm_90 and kernels/ptx/ptxas-report.txt keeps its register and spill
#                   report.
#                   Also kernels/ptx/sm80/conv2d.ptx: conv2d.cu for compute_80, where its _tf32 kernels use tensor
#                   cores (wmma tf32 needs sm_80); the cuda driver loads it on devices of compute capability >= 8.0,
#                   ptxas checks it for sm_80 and sm_90.
#   make ptx-check  the same into a temporary folder, and fails when the committed PTX differs from what nvcc makes
#                   now (a .cu edited without `make ptx`).
NVCC       ?= nvcc
PTXAS      ?= ptxas
PTX_ARCH   ?= compute_70
PTXAS_SMS  ?= sm_70 sm_80 sm_90
PTX80_ARCH ?= compute_80
PTX80_SMS  ?= sm_80 sm_90
PTX80_SRCS := kernels/conv2d.cu


KERNEL_SRCS := $(wildcard kernels/*.cu)
KERNEL_HDRS := $(wildcard kernels/*.cuh)
KERNEL_PTX  := $(patsubst kernels/%.cu,kernels/ptx/%.ptx,$(KERNEL_SRCS))
PTX80       := $(patsubst kernels/%.cu,kernels/ptx/sm80/%.ptx,$(PTX80_SRCS))

.PHONY: ptx ptx-check

ptx: $(KERNEL_PTX) $(PTX80) kernels/ptx/ptxas-report.txt

kernels/ptx/%.ptx: kernels/%.cu $(KERNEL_HDRS)
	@mkdir -p kernels/ptx
	$(NVCC) -ptx -arch=$(PTX_ARCH) -std=c++14 -O3 $< -o $@

kernels/ptx/sm80/%.ptx: kernels/%.cu $(KERNEL_HDRS)
	@mkdir -p kernels/ptx/sm80
	$(NVCC) -ptx -arch=$(PTX80_ARCH) -std=c++14 -O3 $< -o $@

kernels/ptx/ptxas-report.txt: $(KERNEL_PTX) $(PTX80)
	@set -e; : > $@.tmp; \
	for p in $(KERNEL_PTX); do \
	  for sm in $(PTXAS_SMS); do \
	    echo "== $$p $$sm" >> $@.tmp; \
	    $(PTXAS) -arch=$$sm -v $$p -o /dev/null 2>> $@.tmp; \
	  done; \
	done; \
	for p in $(PTX80); do \
	  for sm in $(PTX80_SMS); do \
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
	done; \
	for s in $(PTX80_SRCS); do \
	  b=$$(basename $$s .cu); \
	  $(NVCC) -ptx -arch=$(PTX80_ARCH) -std=c++14 -O3 $$s -o $$tmp/$$b.80.ptx; \
	  for sm in $(PTX80_SMS); do $(PTXAS) -arch=$$sm $$tmp/$$b.80.ptx -o /dev/null; done; \
	  if ! cmp -s $$tmp/$$b.80.ptx kernels/ptx/sm80/$$b.ptx; then \
	    echo "kernels/ptx/sm80/$$b.ptx is stale: run make ptx"; exit 1; fi; \
	done; echo "ptx-check: $(words $(KERNEL_SRCS)) modules current, ptxas ok for $(PTXAS_SMS); sm80: $(PTX80_SRCS) ok for $(PTX80_SMS)"
