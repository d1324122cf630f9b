#!/usr/bin/env bash
# Installs what building, training and testing need on a fresh Debian 12 machine that
# has Go 1.26 (run as root, or with sudo available):
#   - libopenblas-dev and pkg-config: the CPU backend's GEMM (cgo), g++ for the emulator
#   - libdnnl-dev: oneDNN, the float32 CPU backend's convolutions (cgo)
#   - dataset-fashion-mnist: the embedded default's data, under /usr/share/datasets/fashion-mnist
#   - with --cuda: nvidia-cuda-toolkit (nvcc 11.8, about 1.6 GB) from Debian's non-free
#     component, for `make ptx`; not needed to train on the CPU or to run the tests
#   - with --torch: python3-torch, for scripts/torch_parity.py and the PyTorch benchmark
#   - with --mpi: openmpi-bin and libopenmpi-dev (Open MPI: mpirun, mpicc, pkg-config ompi-c), for data-parallel
#     training (make build-mpi) and its tests (make test-mpi); not needed otherwise
# Then it downloads the Go modules. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

cuda=0 torch=0 mpi=0
for a in "$@"; do
  case "$a" in
    --cuda) cuda=1 ;;
    --torch) torch=1 ;;
    --mpi) mpi=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $a (allowed: --cuda, --torch, --mpi)" >&2; exit 2 ;;
  esac
done

pkgs=(g++ make pkg-config libopenblas-dev libdnnl-dev dataset-fashion-mnist)
[ "$torch" = 1 ] && pkgs+=(python3-torch python3-numpy)
[ "$mpi" = 1 ] && pkgs+=(openmpi-bin libopenmpi-dev)
if [ "$cuda" = 1 ] && ! command -v nvcc >/dev/null 2>&1; then
  $SUDO bash scripts/enable-debian-nonfree.sh
  pkgs+=(nvidia-cuda-toolkit)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

command -v go >/dev/null 2>&1 || { echo "setup: Go 1.26 is required (https://go.dev/dl/); put it on PATH" >&2; exit 1; }
go mod download
echo "setup: done"
