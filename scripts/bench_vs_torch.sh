#!/usr/bin/env bash
# Side-by-side training speed of the Go CPU backend and PyTorch on the celeba32 U-Net,
# both on the same number of threads, alternating Go and PyTorch runs so that both see
# the same machine load (timings on shared machines drift by ±30% from run to run; only
# ratios measured in one run count).
#
#   scripts/bench_vs_torch.sh [-n STEPS] [-r ROUNDS] [-b BATCH] [-t THREADS] [-m auto|train|test]
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

steps=3 rounds=3 batch=64 threads=2 mode=auto
while getopts "n:r:b:t:m:h" o; do
	case $o in
	n) steps=$OPTARG ;;
	r) rounds=$OPTARG ;;
	b) batch=$OPTARG ;;
	t) threads=$OPTARG ;;
	m) mode=$OPTARG ;;
	*) sed -n '2,22p' "$self"; exit 2 ;;
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
if [ "$mode" = test ] && [ "$batch" != 64 ]; then
	echo "bench_vs_torch: -m test times the model benchmark at batch 64 only" >&2; exit 2
fi

if [ "$mode" = test ]; then
	go test -c -o "$tmp/model.test" ./model/
fi

# go_run prints the Go side's `bench:` line.
go_run() {
	if [ "$mode" = train ]; then
		GOMAXPROCS=$threads OMP_NUM_THREADS=1 "$trainbin" -c configs/celeba32.toml -bench "$steps" -device cpu \
			-set train.batch_size="$batch" 2>&1 | grep '^bench:' | tail -1
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

torch_run() {
	"$py" scripts/bench_torch.py --batch "$batch" --threads "$threads" --steps "$steps" 2>/dev/null | grep '^bench:' | tail -1
}

imgs() { awk '{print $2}' <<<"$1"; }

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
