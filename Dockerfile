# Multi-stage build of the GPU trainer.
#
#   docker build -t ddpm .
#   docker run --gpus all -v $PWD/datasets:/data -v $PWD/runs:/app/runs ddpm -c configs/celeba32.toml
#   docker run --gpus all ddpm -c configs/celeba32.toml -bench 50     (timing on random data; no dataset needed)
#
# /data is where the image looks for datasets (configs name datasets/..., and /app/datasets points at /data), so
# DATA/img_align_celeba holds the CelebA JPEGs.
#
# The build stage runs exactly what CI runs on Debian 12: scripts/setup.sh --cuda (g++, OpenBLAS, oneDNN 2.6.3,
# nvcc 11.8 and the driver stub from Debian), make ptx (checks the committed PTX by content) and make build-cuda.
# The runtime stage installs exactly the packages of the libraries `ldd bin/train` lists (RUNTIME_PACKAGES; CI's
# scripts/docker-libs.sh fails when they differ); the NVIDIA container toolkit injects libcuda.so.1 at run time.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
COPY scripts/ scripts/
RUN scripts/setup.sh --cuda
COPY . .
RUN make ptx && make build-cuda

FROM debian:12-slim AS runtime
ARG RUNTIME_PACKAGES="libdnnl2 libgcc-s1 libgfortran5 libgomp1 libopenblas0-pthread libquadmath0 libstdc++6 ocl-icd-libopencl1"
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${RUNTIME_PACKAGES} \
    && rm -rf /var/lib/apt/lists/*
ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /app
COPY --from=build /src/bin/train /src/bin/sample /src/bin/pack /src/bin/export /src/bin/eval /app/bin/
COPY --from=build /src/configs /app/configs
RUN ln -s /data /app/datasets
ENV PATH=/app/bin:$PATH
ENTRYPOINT ["/app/bin/train", "-device", "cuda"]
CMD ["-c", "configs/celeba32.toml"]
