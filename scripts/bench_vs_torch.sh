#!/usr/bin/env bash
# Side-by-side training speed of the Go CPU backend and PyTorch on the celeba32 U-Net,
# both on the same number of threads, alternating Go and PyTorch runs so that both see
# the same machine load (timings on shared machines drift by ±30% from run to run; only
# ratios measured in one run count).
#
#   scripts/bench_vs_torch.sh [-n STEPS] [-r ROUNDS] [-b BATCH] [-t THREADS] [-m auto|train|test] [-p fp32|bf16]
#
# -p bf16: the mixed-precision comparison. Each round runs, one after the other, the Go side at fp32, the Go side at
#   train.precision = bf16 (-m train only) and PyTorch with the whole model in bfloat16 (scripts/bench_torch.py
#   --dtype bf16; PyTorch 1.13's CPU autocast fails on GroupNorm), and prints per round and as medians the ratios Go
#   bf16 / Go fp32 and Go bf16 / PyTorch bf16, and the CPU model and bf16 instructions.
#
# Go side, -m train: train -c configs/celeba32.toml -bench STEPS -device cpu
#   -set train.batch_size=BATCH (its last line: `bench: <img/s> img/s, <GFLOP/s> GFLOP/s,
#   <ms> ms/step, <MiB> MiB peak`); -m test: the model benchmark
#   `go test ./model/ -run '^$' -bench 'UNetTrainStep/celeba32' -benchtime STEPSx` (batch 64
#   only; forward, loss, backward, no optimizer step), its peak RSS taken by /usr/bin/time.
#   -m auto (default) uses the train side when ./cmd/train builds and knows -bench (it is
#   built from the working tree into a temporary folder, so it times the current code).
# PyTorch side: scripts/bench_torch.py (Debian's /usr/bin/python3 with torch), which
# prints the same `bench:` line.
#
# Prints each run's figures, each round's ratio Go/PyTorch in images/s, the median ratio,
# and the ratio of each side's best run (load from other processes only ever slows a run
# down, so under intermittent load the best of several runs is the better estimate of
# an idle machine).
set -euo pipefail
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$0")/.."

steps=3 rounds=3 batch=64 threads=2 mode=auto precision=fp32
while getopts "n:r:b:t:m:p:h" o; do
	case $o in
	n) steps=$OPTARG ;;
	r) rounds=$OPTARG ;;
	b) batch=$OPTARG ;;
	t) threads=$OPTARG ;;
	m) mode=$OPTARG ;;
	p) precision=$OPTARG ;;
	*) sed -n '2,28p' "$self"; exit 2 ;;
	esac
done
py=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The train side is built from the working tree, so that it times the current backend.
trainbin=$tmp/train
if [ "$mode" != test ] && go build -o "$trainbin" ./cmd/train 2>/dev/null &&
	"$trainbin" -h 2>&1 | grep -q -- '-bench'; then
	[ "$mode" = auto ] && mode=train
elif [ "$mode" = train ]; then
	echo "bench_vs_torch: ./cmd/train does not build or has no -bench" >&2; exit 2
else
	mode=test
fi
if [ "$precision" != fp32 ] && [ "$precision" != bf16 ]; then
	echo "bench_vs_torch: -p $precision: allowed: fp32, bf16" >&2; exit 2
fi
if [ "$precision" = bf16 ] && [ "$mode" != train ]; then
	echo "bench_vs_torch: -p bf16 needs the train side (./cmd/train with -bench)" >&2; exit 2
fi
if [ "$mode" = test ] && [ "$batch" != 64 ]; then
	echo "bench_vs_torch: -m test times the model benchmark at batch 64 only" >&2; exit 2
fi

if [ "$mode" = test ]; then
	go test -c -o "$tmp/model.test" ./model/
fi

# go_run [PRECISION] prints the Go side's `bench:` line (train mode: at train.precision PRECISION, default fp32; the
# summary line, which names the precision and oneDNN's kernel, goes to $tmp/go.summary).
go_run() {
	if [ "$mode" = train ]; then
		GOMAXPROCS=$threads OMP_NUM_THREADS=1 "$trainbin" -c configs/celeba32.toml -bench "$steps" -device cpu \
			-set train.batch_size="$batch" -set train.precision="${1:-fp32}" >"$tmp/go.out" 2>&1 || true
		grep '^bench:' "$tmp/go.out" | head -1 >"$tmp/go.summary"
		grep '^bench:' "$tmp/go.out" | tail -1
		return
	fi
	# The model benchmark runs in its package directory; /usr/bin/time -f %M gives the peak RSS in KiB.
	(cd model && GOMAXPROCS=$threads /usr/bin/time -f 'maxrss %M' -o "$tmp/rss" "$tmp/model.test" \
		-test.run '^$' -test.bench 'UNetTrainStep/celeba32' -test.benchtime "${steps}x" >"$tmp/go.out" 2>&1)
	awk -v rss="$(awk '/maxrss/ {print $2}' "$tmp/rss")" '/^BenchmarkUNetTrainStep\/celeba32/ {
		for (i = 2; i <= NF; i++) {
			if ($i == "ns/op") ms = $(i-1) / 1e6
			if ($i == "images/s") ips = $(i-1)
			if ($i == "GFLOP/s") gf = $(i-1)
		}
		printf "bench: %.2f img/s, %.1f GFLOP/s, %.0f ms/step, %.0f MiB peak\n", ips, gf, ms, rss / 1024
	}' "$tmp/go.out"
}

# torch_run [DTYPE] prints PyTorch's `bench:` line (DTYPE fp32 or bf16: the whole model cast).
torch_run() {
	"$py" scripts/bench_torch.py --batch "$batch" --threads "$threads" --steps "$steps" --dtype "${1:-fp32}" 2>/dev/null |
		grep '^bench:' | tail -1
}

imgs() { awk '{print $2}' <<<"$1"; }
ratio() { awk -v a="$(imgs "$1")" -v b="$(imgs "$2")" 'BEGIN {printf "%.2f", a / b}'; }
median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

if [ "$precision" = bf16 ]; then
	cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
	isa=$(grep -o -w -E 'avx512_bf16|amx_bf16|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')
	echo "Go fp32, Go bf16, PyTorch bf16 (whole model), celeba32, batch $batch, $threads threads, $steps steps per run, $rounds rounds"
	echo "CPU: $cpu; bf16 instructions: ${isa:-none}"
	r32=() rtorch=() g32s=() g16s=() t16s=()
	for r in $(seq 1 "$rounds"); do
		g32=$(go_run fp32)
		g16=$(go_run bf16)
		summary=$(cat "$tmp/go.summary")
		t16=$(torch_run bf16)
		if [ -z "$g32" ] || [ -z "$g16" ] || [ -z "$t16" ]; then
			echo "round $r: a run printed no bench line (go fp32: '$g32', go bf16: '$g16', torch bf16: '$t16')" >&2
			cat "$tmp/go.out" >&2; exit 1
		fi
		r32+=("$(ratio "$g16" "$g32")") rtorch+=("$(ratio "$g16" "$t16")")
		g32s+=("$(imgs "$g32")") g16s+=("$(imgs "$g16")") t16s+=("$(imgs "$t16")")
		echo "round $r  go fp32:    $g32"
		echo "round $r  go bf16:    $g16   [${summary#bench: }]"
		echo "round $r  torch bf16: $t16"
		echo "round $r  go bf16 / go fp32: ${r32[-1]}   go bf16 / torch bf16: ${rtorch[-1]}"
	done
	echo "median go bf16 / go fp32: $(printf '%s\n' "${r32[@]}" | median)   (target on AMX: ≥ 2)"
	echo "median go bf16 / torch bf16: $(printf '%s\n' "${rtorch[@]}" | median)   (target on AMX: ≥ 1.2)"
	b32=$(printf '%s\n' "${g32s[@]}" | sort -g | tail -1)
	b16=$(printf '%s\n' "${g16s[@]}" | sort -g | tail -1)
	bt=$(printf '%s\n' "${t16s[@]}" | sort -g | tail -1)
	echo "best: go fp32 $b32, go bf16 $b16, torch bf16 $bt img/s; ratios of bests: go bf16 / go fp32 $(awk -v a="$b16" -v b="$b32" 'BEGIN {printf "%.2f", a / b}'), go bf16 / torch bf16 $(awk -v a="$b16" -v b="$bt" 'BEGIN {printf "%.2f", a / b}')"
	exit 0
fi

echo "Go ($mode mode) vs PyTorch, celeba32, batch $batch, $threads threads, $steps steps per run, $rounds rounds"
ratios=() gos=() torches=()
for r in $(seq 1 "$rounds"); do
	g=$(go_run)
	t=$(torch_run)
	if [ -z "$g" ] || [ -z "$t" ]; then
		echo "round $r: a run printed no bench line (go: '$g', torch: '$t')" >&2; exit 1
	fi
	ratio=$(awk -v a="$(imgs "$g")" -v b="$(imgs "$t")" 'BEGIN {printf "%.2f", a / b}')
	ratios+=("$ratio")
	gos+=("$(imgs "$g")")
	torches+=("$(imgs "$t")")
	echo "round $r  go:    $g"
	echo "round $r  torch: $t"
	echo "round $r  ratio go/torch (img/s): $ratio"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
echo "median ratio go/torch: $median"
bg=$(printf '%s\n' "${gos[@]}" | sort -g | tail -1)
bt=$(printf '%s\n' "${torches[@]}" | sort -g | tail -1)
echo "best go: $bg img/s, best torch: $bt img/s, ratio of bests: $(awk -v a="$bg" -v b="$bt" 'BEGIN {printf "%.2f", a / b}')"
