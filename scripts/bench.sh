#!/usr/bin/env bash
# All of physcon's benchmarks, one command; the figures of BENCHMARKS.md.
#
#   scripts/bench.sh            # step vs PyTorch (1 and 2 threads, 3 alternating rounds), overhead, scaling
#   scripts/bench.sh --quick    # step vs PyTorch only
#   scripts/bench.sh --all      # also the criterion per-loss benches (benches/losses.rs, ~8 min more)
#
# Run it on an otherwise idle machine: every timing is wall-clock. Results and
# logs go to target/bench/ (step-table.md, scaling.md, overhead.txt, *.log).
# PYTHON overrides the interpreter of the PyTorch side (default: python3 on the
# PATH that scripts/with-libtorch.sh sets up, i.e. the torch 2.13.0 venv);
# BENCH_ROUNDS the number of alternating physcon/PyTorch rounds (default 3);
# BENCH_MALLOC=tuned runs every process (both sides) with glibc malloc told to
# keep freed memory (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_: no fresh
# page faults for every large tensor) and writes to target/bench-malloc-tuned/;
# BENCH_OUT overrides the output folder.
set -euo pipefail

cd "$(dirname "$0")/.."
mode="${1:-}"
case "${mode}" in
"" | --quick | --all) ;;
*)
    echo "usage: scripts/bench.sh [--quick | --all]" >&2
    exit 2
    ;;
esac
out="${BENCH_OUT:-target/bench}"
malloc="${BENCH_MALLOC:-default}"
case "${malloc}" in
default) ;;
tuned)
    export MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824
    out="${BENCH_OUT:-target/bench-malloc-tuned}"
    ;;
*)
    echo "BENCH_MALLOC must be default or tuned" >&2
    exit 2
    ;;
esac
mkdir -p "${out}"
# Absolute: cargo runs each bench from its own package's folder, where a relative
# --json path would not exist.
out="$(cd "${out}" && pwd)"
run() { scripts/with-libtorch.sh "$@"; }
py="${PYTHON:-python3}"

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "cpu family/model/stepping: $(awk -F: '/^cpu family/ {f=$2} /^model\t/ {m=$2} /^stepping/ {s=$2} END {gsub(/ /, "", f); gsub(/ /, "", m); gsub(/ /, "", s); print f "/" m "/" s}' /proc/cpuinfo), avx512: $(grep -qm1 avx512f /proc/cpuinfo && echo yes || echo no)"
    echo "cores (nproc): $(nproc)"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "kernel: $(uname -r)"
    echo "rustc: $(rustc --version)"
    echo "torch (python side and the libtorch tch links): $(run "${py}" -c 'import torch; print(torch.__version__)' 2>/dev/null)"
    echo "glibc malloc: ${malloc} (MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-unset} MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-unset})"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "${out}/machine.txt"

echo "== building benches"
run cargo bench --no-run --bench step --bench overhead --bench scaling 2>&1 | tail -n 3

echo "== the bench's step is the example's stage-2 step (Trainer::run, one step)"
run cargo bench --bench step -- --verify-example --out "${out}" 2>&1 | tee "${out}/verify-example.log" | grep -v '^ *Finished\|^ *Running'

echo "== fixtures (weights, batches, draws, loss values, gradients) and the PyTorch equality check"
run cargo bench --bench step -- --check-only --out "${out}" 2>&1 | grep -v '^ *Finished\|^ *Running'
run "${py}" scripts/bench_pytorch.py --fixtures "${out}" --check-only 2>&1 | grep -v 'NumPy\|_conversion_method' |
    tee "${out}/check.log"

# physcon and PyTorch alternate per configuration (the order flips every round) so that
# drift in the machine's speed hits both; round 1 also times each loss alone.
rounds="${BENCH_ROUNDS:-3}"
rm -rf "${out}/rounds"
mkdir -p "${out}/rounds"
for r in $(seq 1 "${rounds}"); do
    for b in 32 256; do
        for t in 1 2; do
            extra=()
            [[ "${r}" -gt 1 ]] && extra=(--no-breakdown)
            physcon() {
                echo "-- round ${r}: physcon, batch ${b}, ${t} thread(s)"
                run cargo bench --bench step -- --out "${out}" --no-fixtures --batches "${b}" --threads "${t}" "${extra[@]}" \
                    --json "${out}/rounds/physcon-r${r}-b${b}-t${t}.json" 2>&1 |
                    grep -v '^ *Finished\|^ *Running\|^stage-2\|^wrote' | tee -a "${out}/step-rust.log"
            }
            pytorch() {
                echo "-- round ${r}: PyTorch, batch ${b}, ${t} thread(s)"
                run "${py}" scripts/bench_pytorch.py --fixtures "${out}" --skip-check --batches "${b}" --threads "${t}" \
                    "${extra[@]}" --json "${out}/rounds/pytorch-r${r}-b${b}-t${t}.json" 2>&1 |
                    grep -v 'NumPy\|_conversion_method\|^torch ' | tee -a "${out}/step-pytorch.log"
            }
            if ((r % 2)); then
                physcon
                pytorch
            else
                pytorch
                physcon
            fi
        done
    done
done
run "${py}" scripts/bench_pytorch.py --fixtures "${out}" --table "${out}"/rounds/*.json 2>&1 |
    grep -v 'NumPy\|_conversion_method'

if [[ "${mode}" != "--quick" ]]; then
    echo "== overhead of physcon's optimality loss against the hand-written floor"
    run cargo bench --bench overhead 2>&1 | grep -v '^ *Finished\|^ *Running' | tee "${out}/overhead.txt"

    echo "== scaling with batch size and molecule size"
    run cargo bench --bench scaling -- --out "${out}" 2>&1 | grep -v '^ *Finished\|^ *Running' | tee "${out}/scaling.log"
fi

if [[ "${mode}" == "--all" ]]; then
    echo "== criterion: every loss with the Morse energy and with the reference model, samplers, Kabsch (benches/losses.rs)"
    run cargo bench --bench losses 2>&1 | tee "${out}/losses.log"
fi

echo
echo "== summary (${out}/)"
cat "${out}/step-table.md"
if [[ "${mode}" != "--quick" ]]; then
    echo
    cat "${out}/overhead.txt"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "${out}/machine.txt"
