#!/usr/bin/env bash
# scripts/ptx.sh -- keeps the committed PTX (kernels/ptx) current with kernels/*.cu, by content. Run by make:
#
#   scripts/ptx.sh build   (make ptx)
#       With nvcc: recompiles only the modules whose inputs changed, then rewrites the manifest and
#       kernels/ptx/ptxas-report.txt. Without nvcc: checks that every module is current; prints one line and succeeds
#       if so, otherwise names each stale module and fails.
#   scripts/ptx.sh check   (make ptx-check, CI; needs nvcc)
#       Recompiles every module into a temporary folder, runs ptxas on each for its SMs, and fails when the committed
#       PTX, the manifest or the ptxas report differs from what nvcc and ptxas make now.
#
# Why content and not file times: git does not keep modification times, so in a fresh clone the .cu files can be
# newer than the committed PTX although nothing changed, and a make rule would call nvcc, which a CPU-only machine
# does not have. Instead kernels/ptx/SOURCES.sha256 records for each module its nvcc flags, the sha256 of every file
# under kernels/ that nvcc read for it (from nvcc -M: the .cu and the headers it includes, transitively) and the
# sha256 of the PTX written. A module is current when all of these still match. A changed include list needs a
# changed .cu or header, which a recorded hash catches, so the check needs no preprocessor.
#
# Manifest lines (fields separated by spaces), grouped by module in the order below:
#   <module> flags <nvcc flags...>
#   <module> in <sha256> <input file>        (the .cu first, then its headers in nvcc -M order)
#   <module> out <sha256>
# Deleting the manifest makes `make ptx` rebuild everything.
#
# Environment: NVCC (default nvcc), PTXAS (default ptxas). An NVCC that cannot be found counts as "no nvcc".
set -euo pipefail
export LC_ALL=C # the same module order (glob) and sorting everywhere
cd "$(dirname "$0")/.."

NVCC=${NVCC:-nvcc}
PTXAS=${PTXAS:-ptxas}
MANIFEST=kernels/ptx/SOURCES.sha256
REPORT=kernels/ptx/ptxas-report.txt
REBUILD_HINT="install nvcc with scripts/setup.sh --cuda and run make ptx"

# nvcc 11.8 and compute_70: one PTX (ISA 7.8) runs on V100, A100 and H100 with a CUDA 11.8 or newer driver.
PTX_ARCH=compute_70
PTXAS_SMS="sm_70 sm_80 sm_90"
# conv2d.cu again for compute_80, where its _tf32 kernels use tensor cores and asynchronous copies (mma.sync with
# TF32 and cp.async need sm_80), conv2d_bf16.cu, its BF16 kernels (mma.sync m16n8k16 bf16; a module of their own,
# see kernels/conv2d.cu), conv2d_wgrad_tf32.cu, its TF32 backward-weight kernels (a module of their own for the
# same reason), linear_bf16.cu, the BF16 GEMM of the linear layers and attention (gemm_bf16), and
# tc_probe.cu, the tests' probes of those instructions; the cuda driver loads kernels/ptx/sm80/*.ptx on devices of
# compute capability >= 8.0.
PTX80_ARCH=compute_80
PTX80_SMS="sm_80 sm_90"
PTX80_SRCS="kernels/conv2d.cu kernels/conv2d_bf16.cu kernels/conv2d_wgrad_tf32.cu kernels/linear_bf16.cu kernels/tc_probe.cu"
NVCC_FLAGS="-std=c++14 -O3"

# The modules: mods[i] is the PTX file made from srcs[i] for archs[i], checked by ptxas for smss[i].
mods=() srcs=() archs=() smss=()
add_module() { mods+=("$1"); srcs+=("$2"); archs+=("$3"); smss+=("$4"); }
for s in kernels/*.cu; do add_module "kernels/ptx/$(basename "$s" .cu).ptx" "$s" "$PTX_ARCH" "$PTXAS_SMS"; done
for s in $PTX80_SRCS; do add_module "kernels/ptx/sm80/$(basename "$s" .cu).ptx" "$s" "$PTX80_ARCH" "$PTX80_SMS"; done

flags() { echo "-ptx -arch=${archs[$1]} $NVCC_FLAGS"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
have_nvcc() { command -v "$NVCC" >/dev/null 2>&1; }
is_module() {
  local m
  for m in "${mods[@]}"; do [ "$m" = "$1" ] && return 0; done
  return 1
}
# The manifest lines of module $1 (none when the manifest or the module is missing).
recorded() { [ -f "$MANIFEST" ] && awk -v m="$1" '$1 == m' "$MANIFEST" || true; }

# Why module i is not current, in a few words; nothing when it is current.
stale_reason() {
  local i=$1 m=${mods[$1]} lines changed="" has_src=0 h f
  lines=$(recorded "$m")
  if [ -z "$lines" ]; then
    echo "${srcs[$i]} has no entry in $MANIFEST"
    return
  fi
  if [ "$(awk '$2 == "flags" { $1 = ""; $2 = ""; sub(/^ +/, ""); print }' <<<"$lines")" != "$(flags "$i")" ]; then
    echo "the nvcc flags changed (now $(flags "$i"))"
    return
  fi
  while read -r h f; do
    [ "$f" = "${srcs[$i]}" ] && has_src=1
    if [ ! -f "$f" ]; then
      changed+="${changed:+, }$f (removed)"
    elif [ "$(sha "$f")" != "$h" ]; then
      changed+="${changed:+, }$f"
    fi
  done < <(awk '$2 == "in" { print $3, $4 }' <<<"$lines")
  if [ -n "$changed" ]; then
    echo "$changed changed"
  elif [ "$has_src" = 0 ]; then
    echo "its entry in $MANIFEST does not list ${srcs[$i]}"
  elif [ ! -f "$m" ]; then
    echo "$m is missing"
  elif [ "$(sha "$m")" != "$(awk '$2 == "out" { print $3 }' <<<"$lines")" ]; then
    echo "$m differs from the one recorded in $MANIFEST (edited, or merged from another branch?)"
  fi
}

# Manifest modules whose source is gone (a .cu deleted or renamed).
removed_modules() {
  [ -f "$MANIFEST" ] || return 0
  local m
  for m in $(awk '!/^#/ { print $1 }' "$MANIFEST" | uniq); do is_module "$m" || echo "$m"; done
}

# The files under kernels/ that nvcc reads for module i, the .cu first. nvcc -M prints a make rule,
# "conv2d.o : kernels/conv2d.cu \ <every header, system ones included>"; keep the prerequisites under kernels/.
inputs() {
  local f
  # shellcheck disable=SC2046 # word splitting of the flags is intended
  "$NVCC" -M $(flags "$1" | sed 's/^-ptx //') "${srcs[$1]}" | tr -d '\\' | tr ' ' '\n' | sed -n '/:$/,$p' | tail -n +2 |
    while read -r f; do
      [ -n "$f" ] || continue
      f=$(realpath -m --relative-to=. "$f")
      case "$f" in kernels/*) echo "$f" ;; esac
    done | awk '!seen[$0]++'
}

# Compiles module i to file $2 and prints its manifest lines (flags, inputs, the PTX's hash).
compile() {
  local i=$1 out=$2 f
  mkdir -p "$(dirname "$out")"
  # shellcheck disable=SC2046
  "$NVCC" $(flags "$i") "${srcs[$i]}" -o "$out"
  echo "${mods[$i]} flags $(flags "$i")"
  inputs "$i" | while read -r f; do echo "${mods[$i]} in $(sha "$f") $f"; done
  echo "${mods[$i]} out $(sha "$out")"
}

# Writes the ptxas register and spill report of the modules found under folder $1 (the repository or a copy) to $2.
write_report() {
  local dir=$1 out=$2 i sm
  : >"$out"
  for i in "${!mods[@]}"; do
    for sm in ${smss[$i]}; do
      echo "== ${mods[$i]} $sm" >>"$out"
      "$PTXAS" -arch="$sm" -v "$dir/${mods[$i]}" -o /dev/null 2>>"$out"
    done
  done
}

manifest_header() {
  echo "# Inputs of each PTX module: written by make ptx (scripts/ptx.sh), which explains the format; do not edit."
}

PTX_CHECK_TRIES=${PTX_CHECK_TRIES:-5}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

build() {
  local i m reasons=() stale=() n=0
  for i in "${!mods[@]}"; do
    reasons[i]=$(stale_reason "$i")
    [ -z "${reasons[i]}" ] || stale+=("${mods[$i]} is stale: ${reasons[i]}")
  done
  for m in $(removed_modules); do stale+=("$m is stale: its source was removed"); done

  if ! have_nvcc; then
    if [ "${#stale[@]}" -eq 0 ]; then
      echo "make ptx: the committed PTX in kernels/ptx is current with kernels/*.cu ($MANIFEST); to rebuild it after an edit, run scripts/setup.sh --cuda, then make ptx"
      return 0
    fi
    for m in "${stale[@]}"; do echo "$m; $REBUILD_HINT" >&2; done
    return 1
  fi

  if [ "${#stale[@]}" -eq 0 ] && [ -f "$REPORT" ]; then
    echo "make ptx: all ${#mods[@]} PTX modules are current with their sources ($MANIFEST); nothing to rebuild"
    return 0
  fi
  manifest_header >"$tmp/manifest"
  for i in "${!mods[@]}"; do
    m=${mods[$i]}
    if [ -n "${reasons[i]}" ]; then
      echo "make ptx: $m (${reasons[i]})"
      compile "$i" "$m.tmp" >>"$tmp/manifest"
      mv "$m.tmp" "$m"
      n=$((n + 1))
    else
      recorded "$m" >>"$tmp/manifest"
    fi
  done
  for m in $(removed_modules); do
    echo "make ptx: removing $m (its source was removed)"
    rm -f "$m"
  done
  mv "$tmp/manifest" "$MANIFEST"
  write_report . "$tmp/report"
  mv "$tmp/report" "$REPORT"
  echo "make ptx: rebuilt $n of ${#mods[@]} modules; $MANIFEST and $REPORT ($(grep -c "Used" "$REPORT") kernels compiled for all SMs) updated"
}

check() {
  if ! have_nvcc; then
    echo "make ptx-check: needs nvcc ($NVCC not found): install it with scripts/setup.sh --cuda" >&2
    return 1
  fi
  local i m fail=0
  manifest_header >"$tmp/manifest"
  local try
  for i in "${!mods[@]}"; do
    m=${mods[$i]}
    # nvcc 11.8 is not deterministic on every module: the TF32 weight-gradient kernels of sm80/conv2d.ptx come out
    # with other register numbers in about 1 run in 10 (seen with no source change). A stale module differs on every
    # run, so a module passes when one of $PTX_CHECK_TRIES compilations matches the committed file byte for byte.
    for try in $(seq "$PTX_CHECK_TRIES"); do
      compile "$i" "$tmp/$m" >"$tmp/lines"
      if cmp -s "$tmp/$m" "$m"; then break; fi
      [ "$try" = "$PTX_CHECK_TRIES" ] || echo "ptx-check: $m differs from nvcc's output on try $try; compiling again" >&2
    done
    cat "$tmp/lines" >>"$tmp/manifest"
    if ! cmp -s "$tmp/$m" "$m"; then
      echo "$m is stale: it differs from what nvcc makes of ${srcs[$i]} now ($PTX_CHECK_TRIES tries); run make ptx" >&2
      fail=1
    fi
  done
  for m in $(removed_modules); do
    echo "$m is stale: its source was removed; run make ptx" >&2
    fail=1
  done
  write_report "$tmp" "$tmp/report" # fails (set -e) when ptxas rejects a module
  if ! cmp -s "$tmp/manifest" "$MANIFEST"; then
    echo "$MANIFEST is not current; run make ptx. Differences (- committed, + now):" >&2
    diff -u "$MANIFEST" "$tmp/manifest" | sed -n '3,$p' | grep '^[-+]' >&2 || true
    fail=1
  fi
  if ! cmp -s "$tmp/report" "$REPORT"; then
    echo "$REPORT differs from what ptxas reports now; run make ptx" >&2
    fail=1
  fi
  [ "$fail" = 0 ] || return 1
  echo "ptx-check: ${#mods[@]} modules, manifest and ptxas report current; ptxas ok for $PTXAS_SMS (sm80: $PTX80_SRCS for $PTX80_SMS)"
}

case "${1:-}" in
build) build ;;
check) check ;;
*)
  echo "usage: scripts/ptx.sh build|check (make ptx, make ptx-check)" >&2
  exit 2
  ;;
esac
