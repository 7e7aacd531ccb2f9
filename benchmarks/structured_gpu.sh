#!/usr/bin/env bash
# Structured captions on the GPU (issue 37): what decoding constrained to a JSON Schema costs per decode step.
# One bench in one device call: the same clips decoded free and constrained to the `hunyuan` schema, in one
# process (`vidcap bench --caption-format json`, vidcap/bench/structured.py): ms per decode step with and
# without the grammar mask inside the CUDA-graph step, graph replays, the CPU time per step spent advancing
# llguidance's matchers and filling/uploading the mask rows, and the share of rows valid against the schema.
#
# usage: BUDGET_S=290 OUT=/tmp/structured-out benchmarks/structured_gpu.sh
#   qwen2.5-vl-7b (152k vocabulary: the widest mask), VIDEOS=64 clips 1280x720 3 s, BATCH=64 slots, 150 new tokens (EOS ignored)
# DRY=1 runs it on tiny-qwen2.5-vl on the CPU (4 clips at 160x120, 8 tokens) to catch typos before device time.
# The device image has no PyAV, DuckDB, llguidance or jsonschema: carry their wheels in .wheels/ (git-ignored):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_31_x86_64 \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .wheels av==19.0.2 duckdb==2.0.1 \
#     llguidance==1.9.1 jsonschema==4.26.0 jsonschema-specifications referencing rpds-py
# Results: $OUT/bench-json.json and $OUT/log.txt (the device tool brings $OUT back).
set -uo pipefail
t0=$SECONDS
budget=${BUDGET_S:-290}
OUT=${OUT:-/tmp/structured-out}
mkdir -p "$OUT"
log="$OUT/log.txt"
export PYTHONPATH=src TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

. benchmarks/gpu_lib.sh
gpu_setup llguidance jsonschema vidcap.bench.structured vidcap.engine.grammar

shape=qwen2.5-vl-7b videos=${VIDEOS:-64} batch=${BATCH:-64} extra=(--new-tokens 150 --seconds 3 --workers 15)
if [ -n "${DRY:-}" ]; then
  shape=tiny-qwen2.5-vl videos=4 batch=2 extra=(--new-tokens 8 --resolution 160x120 --seconds 1 --workers 2 --device cpu)
fi
left=$(( budget - (SECONDS - t0) - 5 ))
echo "=== json (timeout ${left}s): bench $shape, $videos clips, $batch slots, free vs constrained to hunyuan" | tee -a "$log"
rm -f /tmp/structured-bench/bench.json
timeout -k 10 "$left" $py -m vidcap bench --shape "$shape" --videos "$videos" --batch-size "$batch" \
    --caption-format json --schema hunyuan --work-dir /tmp/structured-bench "${extra[@]}" 2>&1 \
  | grep --line-buffered -v -E "Loading weights|Writing model|it/s\]$|cap_pixels_per_frame|could not be inferred" | tee -a "$log"
echo "=== json rc=${PIPESTATUS[0]} in $(( SECONDS - t0 )) s" | tee -a "$log"
cp /tmp/structured-bench/bench.json "$OUT/bench-json.json" 2>/dev/null || echo "=== json: no bench.json" | tee -a "$log"
echo "=== done in $(( SECONDS - t0 )) s; files: $(ls "$OUT" | tr '\n' ' ')" | tee -a "$log"
