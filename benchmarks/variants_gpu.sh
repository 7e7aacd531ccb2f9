#!/usr/bin/env bash
# Issue 37 (variants): what two captions per clip cost against one, in one device call. Each step is one
# `vidcap bench --variants short,dense`, which runs the same clips twice in one process on one loaded model:
# one variant (dense, the longest) and both (short + dense from one visual prefill), after a warm-up of each.
# Each bench runs under its own timeout so one stuck run cannot eat the rest; the script ends inside BUDGET_S.
#
# usage: BUDGET_S=330 benchmarks/variants_gpu.sh [STEP ...]     (default: pllava qwen25)
#   pllava   vidcap bench --shape pllava-13b    --videos 64 --batch-size 32 --variants short,dense
#   qwen25   vidcap bench --shape qwen2.5-vl-7b --videos 96 --batch-size 48 --variants short,dense
# All: 150 new tokens (EOS ignored: short ends at its own 48-token limit, dense at 150), 15 decode workers,
# 1280x720 5 s clips. DRY=1 runs the same steps on the tiny models on the CPU (4 clips at 160x120, 4 tokens)
# to catch typos before device time is spent.
# Results: $OUT/bench-STEP.json, $OUT/log.txt (the device tool brings $OUT back).
# The GPU machine has no internet, PyAV or DuckDB: their wheels in .wheels/ are installed here (carry them).
set -uo pipefail
t0=$SECONDS
budget=${BUDGET_S:-330}
OUT=${OUT:-/tmp/variants-out}
mkdir -p "$OUT"
log="$OUT/log.txt"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(pllava qwen25)
export PYTHONPATH=src TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

. benchmarks/gpu_lib.sh
gpu_setup

bench() {  # bench NAME CAP MIN SHAPE VIDEOS BATCH
  local name=$1 cap=$2 min=$3 shape=$4 videos=$5 batch=$6 extra=()
  if [ -n "${DRY:-}" ]; then
    case $shape in pllava-13b) shape=tiny-pllava ;; qwen2.5-vl-7b) shape=tiny-qwen2.5-vl ;; esac
    videos=4 batch=2 min=20 extra=(--new-tokens 4 --resolution 160x120 --seconds 1 --workers 2 --device cpu)
  else
    extra=(--new-tokens 150 --workers 15)
  fi
  rm -f "/tmp/v37-$name/bench.json"
  step "$name" "$cap" "$min" $py -m vidcap bench --shape "$shape" --videos "$videos" --batch-size "$batch" \
      --variants short,dense --work-dir "/tmp/v37-$name" "${extra[@]}"
  cp "/tmp/v37-$name/bench.json" "$OUT/bench-$name.json" 2>/dev/null || echo "=== $name: no bench.json" | tee -a "$log"
}

for s in "${steps[@]}"; do
  case $s in
    pllava) bench pllava ${PLLAVA_CAP:-200} 90 pllava-13b ${PLLAVA_VIDEOS:-64} ${PLLAVA_BATCH:-32} ;;
    qwen25) bench qwen25 ${QWEN_CAP:-200} 80 qwen2.5-vl-7b ${QWEN_VIDEOS:-96} ${QWEN_BATCH:-48} ;;
    *) echo "unknown step $s" | tee -a "$log" ;;
  esac
done
echo "=== done in $(( SECONDS - t0 )) s; files: $(ls "$OUT" | tr '\n' ' ')" | tee -a "$log"
