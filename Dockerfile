# Multi-stage build of the GPU trainer.
#
#   docker build -t ddpm .
#   docker run --gpus all -v $PWD/datasets:/data -v $PWD/runs:/app/runs ddpm -c configs/celeba32.toml
#   docker run --gpus all ddpm -c configs/celeba32.toml -bench 50     (timing on random data; no dataset needed)
#
# /data is where the image looks for datasets (configs name datasets/..., and
# /app/datasets points at /data), so DATA/img_align_celeba holds the CelebA JPEGs.
# The CUDA 11.8 toolchain matches the PTX ISA (7.8) that `make ptx` emits and the
# cuda.h that gorgonia.org/cu is known to build against; any driver >= 520 runs it.

ARG CUDA_VERSION=11.8.0
ARG GO_VERSION=1.26.8

FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu22.04 AS build
ARG GO_VERSION
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates curl g++ make pkg-config libopenblas-dev \
    && rm -rf /var/lib/apt/lists/*
RUN curl -fsSL https://go.dev/dl/go${GO_VERSION}.linux-amd64.tar.gz | tar -C /usr/local -xz
ENV PATH=/usr/local/go/bin:$PATH
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# PTX current with the sources (make ptx recompiles the modules whose sources differ from the committed PTX's
# manifest, so the image matches them; kernels/ptx/sm80 holds the tensor-core convolutions loaded on compute
# capability >= 8.0),
# then the cuda-tagged binaries linked against the driver stub; the real libcuda.so.1
# comes from the host through the NVIDIA container toolkit at run time.
RUN make ptx && make build-cuda STUBS=/usr/local/cuda/lib64/stubs

FROM nvidia/cuda:${CUDA_VERSION}-base-ubuntu22.04 AS runtime
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libopenblas0-pthread libstdc++6 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /src/bin/train /src/bin/sample /src/bin/pack /src/bin/export /app/bin/
COPY --from=build /src/configs /app/configs
RUN ln -s /data /app/datasets
ENV PATH=/app/bin:$PATH
ENTRYPOINT ["/app/bin/train", "-device", "cuda"]
CMD ["-c", "configs/celeba32.toml"]
