#!/usr/bin/env bash
# Checks that the Docker image's runtime stage installs exactly the Debian packages that hold the shared libraries
# the built binaries load (ldd), so that a new library cannot be forgotten in the image again. Run after
# `make build-cuda` (CI does): the binaries in bin/ are those the image ships.
#
#   scripts/docker-libs.sh [Dockerfile]
#
# libcuda.so.1 is not checked: the NVIDIA container toolkit injects the host driver's at run time. libc6 comes
# with the runtime stage's base image (debian:12-slim).
set -euo pipefail
cd "$(dirname "$0")/.."
dockerfile=${1:-Dockerfile}
bins=(bin/train bin/sample bin/pack)
for b in "${bins[@]}"; do
  [ -x "$b" ] || { echo "docker-libs: $b missing: run make build-cuda first" >&2; exit 2; }
done

declared=$(sed -n 's/^ARG RUNTIME_PACKAGES="\(.*\)"$/\1/p' "$dockerfile" | tr ' ' '\n' | sed '/^$/d' | sort -u)
[ -n "$declared" ] || { echo "docker-libs: no ARG RUNTIME_PACKAGES=\"…\" line in $dockerfile" >&2; exit 2; }

needed=$(
  for b in "${bins[@]}"; do
    ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
  done | sort -u | while read -r soname path; do
    [ "$soname" = libcuda.so.1 ] && continue
    real=$(realpath "$path")
    pkg=$(dpkg -S "$real" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null || dpkg -S "/usr$real" 2>/dev/null) ||
      { echo "docker-libs: $soname ($real) belongs to no Debian package" >&2; echo "?$soname"; continue; }
    echo "${pkg%%:*}"
  done | sort -u | grep -vx libc6
)

missing=$(comm -23 <(echo "$needed") <(echo "$declared"))
extra=$(comm -13 <(echo "$needed") <(echo "$declared"))
if [ -n "$missing" ] || [ -n "$extra" ]; then
  [ -n "$missing" ] && echo "docker-libs: $dockerfile's RUNTIME_PACKAGES lacks what ldd ${bins[*]} needs: $(echo $missing)" >&2
  [ -n "$extra" ] && echo "docker-libs: $dockerfile's RUNTIME_PACKAGES holds packages no binary needs: $(echo $extra)" >&2
  exit 1
fi
echo "docker-libs: the runtime stage installs exactly the $(echo "$needed" | wc -l) packages ldd ${bins[*]} needs: $(echo $needed)"
