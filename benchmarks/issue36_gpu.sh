#!/usr/bin/env bash
# Issue 36's GPU measurements in one device call, most important first, each bench under its own timeout
# so that one stuck run cannot eat the rest; the whole script ends inside BUDGET_S seconds.
#
# usage: BUDGET_S=580 benchmarks/issue36_gpu.sh [STEP ...]     (default: qwen25 qwen3 internvl check)
#   qwen25    vidcap bench --shape qwen2.5-vl-7b --videos 384 --batch-size 128 --baseline
#   pllava13b vidcap bench --shape pllava-13b    --videos 256 --batch-size 64  --baseline
#   qwen3     vidcap bench --shape qwen3-vl-8b   --videos 128 --batch-size 32  --baseline
#   internvl  vidcap bench --shape internvl3-8b  --videos 128 --batch-size 64  --baseline
#   windows   vidcap bench --shape qwen2.5-vl-7b --videos 96 --batch-size 48 --seconds 60 --window 5
#   check     benchmarks/engine_check.py on the two new shapes (first 32 greedy tokens of 16 clips, float32)
# All benches: 150 new tokens, 15 decode workers, 1280x720 5 s clips. DRY=1 runs the same steps on the
# tiny models on the CPU (4 clips at 160x120, 4 tokens) to catch typos before device time is spent.
# Results: $OUT/bench-STEP.json, $OUT/engine-check.json, $OUT/log.txt (the device tool brings $OUT back).
set -uo pipefail
t0=$SECONDS
budget=${BUDGET_S:-580}
OUT=${OUT:-/tmp/issue36-out}
mkdir -p "$OUT"
log="$OUT/log.txt"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(qwen25 qwen3 internvl check)
export PYTHONPATH=src TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

. benchmarks/gpu_lib.sh
gpu_setup

bench() {  # bench NAME CAP MIN SHAPE VIDEOS BATCH
  local name=$1 cap=$2 min=$3 shape=$4 videos=$5 batch=$6 extra=()
  if [ -n "${DRY:-}" ]; then
    case $shape in qwen2.5-vl-7b) shape=tiny-qwen2.5-vl ;; pllava-13b) shape=tiny-pllava ;; qwen3-vl-8b) shape=tiny-qwen3-vl ;; internvl3-8b) shape=tiny-internvl3 ;; esac
    videos=4 batch=2 extra=(--new-tokens 4 --resolution 160x120 --seconds 1 --workers 2)
  else
    extra=(--new-tokens 150 --workers 15)
  fi
  rm -f "/tmp/i36-$name/bench.json"
  [ -n "${DRY:-}" ] && min=20
  step "$name" "$cap" "$min" $py -m vidcap bench --shape "$shape" --videos "$videos" --batch-size "$batch" --baseline \
      --work-dir "/tmp/i36-$name" "${extra[@]}"
  cp "/tmp/i36-$name/bench.json" "$OUT/bench-$name.json" 2>/dev/null || echo "=== $name: no bench.json" | tee -a "$log"
}

winbench() {  # winbench NAME CAP MIN SHAPE ROWS BATCH SECONDS WINDOW: windows of long videos vs pre-cut clips
  local name=$1 cap=$2 min=$3 shape=$4 videos=$5 batch=$6 secs=$7 win=$8 extra=(--new-tokens 150 --workers 15)
  if [ -n "${DRY:-}" ]; then
    shape=tiny-qwen2.5-vl videos=4 batch=2 secs=2 win=1 min=20 extra=(--new-tokens 4 --resolution 160x120 --workers 2)
  fi
  rm -f "/tmp/i36-$name/bench.json"
  step "$name" "$cap" "$min" $py -m vidcap bench --shape "$shape" --videos "$videos" --batch-size "$batch" \
      --seconds "$secs" --window "$win" --work-dir "/tmp/i36-$name" "${extra[@]}"
  cp "/tmp/i36-$name/bench.json" "$OUT/bench-$name.json" 2>/dev/null || echo "=== $name: no bench.json" | tee -a "$log"
}

for s in "${steps[@]}"; do
  case $s in
    # caps: `BUDGET_S=440 ... qwen25 pllava13b` in one call. Estimated from the H200 JSONs (warm-ups, baseline,
    # engine run): qwen25 ~235 s on an H200, ~270 s on an H100; pllava13b ~190 s on an H200, ~230 s on an H100.
    # qwen25 may take 285 s; pllava13b runs on whatever is left and is skipped under 170 s (it could not finish).
    qwen25)    bench qwen25 285 150 qwen2.5-vl-7b 384 128 ;;
    pllava13b) bench pllava13b 260 170 pllava-13b 256 64 ;;
    pllava13b-small) bench pllava13b-small 240 150 pllava-13b 128 32 ;;
    # issue 37: 96 windows of 5 s from 60 s videos against 96 pre-cut 5 s clips, Qwen2.5-VL-7B (~150 s on an H100)
    windows)   winbench windows 230 120 qwen2.5-vl-7b 96 48 60 5 ;;
    qwen3)    bench qwen3 400 200 qwen3-vl-8b 128 32 ;;
    internvl) bench internvl 300 150 internvl3-8b 128 64 ;;
    check)
      if [ -n "${DRY:-}" ]; then
        step check 120 20 $py benchmarks/engine_check.py /tmp/i36-check --shapes tiny-qwen3-vl,tiny-internvl3 --clips 4 \
            --new 4 --slots 2 --device cpu --json "$OUT/engine-check.json"
      else
        step check 400 150 $py benchmarks/engine_check.py /tmp/i36-check --shapes qwen3-vl-8b,internvl3-8b --clips 16 \
            --new 32 --slots 8 --json "$OUT/engine-check.json"
      fi ;;
    *) echo "unknown step $s" | tee -a "$log" ;;
  esac
done
echo "=== done in $(( SECONDS - t0 )) s; files: $(ls "$OUT" | tr '\n' ' ')" | tee -a "$log"
