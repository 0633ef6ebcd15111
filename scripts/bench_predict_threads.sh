#!/usr/bin/env bash
# predict's ms per molecule on the test split's 107 MMFF frames, --threads 1, 2 and the default,
# interleaved, idle and beside one busy process (`yes` pinned to core 0); each run also
# records how many cores the rest of the machine used meanwhile (busy jiffies of /proc/stat
# minus predict's own CPU time, over the wall time), so runs disturbed by others can be told.
#
#   CHECKPOINT=runs/q/seed-0/consistency.safetensors scripts/bench_predict_threads.sh
#
# MODES (default "idle busy") and ROUNDS (default 12) choose what runs. BENCHMARKS.md, section 6.
set -u
cd "$(dirname "$0")/.."
E=target/release/two_stage
C=${CHECKPOINT:?set CHECKPOINT to a checkpoint, e.g. runs/q/seed-0/consistency.safetensors}
INPUT=${TMPDIR:-/tmp}/test_mmff.extxyz
python3 - "$INPUT" <<'PY'
import gzip, sys
lines = gzip.open("data/test.extxyz.gz", "rt").read().split("\n")
out, k = [], 0
while k < len(lines) and lines[k].strip():
    n = int(lines[k])
    if "level=mmff" in lines[k + 1]:
        out += lines[k : k + 2 + n]
    k += 2 + n
open(sys.argv[1], "w").write("\n".join(out) + "\n")
PY
busy_jiffies() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
one() { # label args...
  local label=$1; shift
  local b0=$(busy_jiffies)
  local out=$( { /usr/bin/time -f "TIME %e %U %S" scripts/with-libtorch.sh $E predict --checkpoint $C --input "$INPUT" --output "${TMPDIR:-/tmp}/bench_predict_threads.extxyz" --force "$@" 2>&1; } )
  local b1=$(busy_jiffies)
  local ms=$(grep -o '[0-9.]* ms per molecule' <<<"$out" | cut -d' ' -f1)
  read -r _ wall usr sys <<<"$(grep '^TIME' <<<"$out")"
  local others=$(awk -v b="$((b1-b0))" -v u="$usr" -v s="$sys" -v w="$wall" 'BEGIN{printf "%.2f", (b/100 - u - s)/w}')
  echo "$MODE $label ms=$ms others=$others wall=$wall"
}
for MODE in ${MODES:-idle busy}; do
  YPID=
  if [ $MODE = busy ]; then taskset -c 0 yes > /dev/null & YPID=$!; sleep 1; fi
  for round in $(seq ${ROUNDS:-12}); do
    one t1 --threads 1; one t2 --threads 2; one default
  done
  if [ $MODE = busy ]; then kill $YPID; wait $YPID 2>/dev/null; fi
done
