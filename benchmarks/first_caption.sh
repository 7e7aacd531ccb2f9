#!/usr/bin/env bash
# One device call: `vidcap caption` (not the bench) on a real-size random-weight model, to time the first
# caption after the model is loaded (the decode workers start while it loads).
# usage: benchmarks/first_caption.sh SHAPE CLIPS SLOTS|auto [extra caption args]
#   auto: no --batch-size (the default: 64 slots on a GPU); COLD=1: an empty Triton cache, as on a machine's
#   first run (the engine's kernels then compile while the model loads)
set -uo pipefail
shape=$1; n=$2; slots=$3; shift 3
if [ "$slots" != auto ]; then set -- --batch-size "$slots" "$@"; fi
if [ "${COLD:-0}" = 1 ]; then export TRITON_CACHE_DIR=$(mktemp -d); fi
export PYTHONPATH=src TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-deps --root-user-action=ignore .wheels/av-*.whl 2>&1 | tail -2
dir=/tmp/first-$shape
python3 - "$shape" "$n" "$dir" <<'PY'
import sys
from pathlib import Path
import pandas as pd
from vidcap.bench.clips import make_bench_clips
from vidcap.bench.shapes import write_skeleton
shape, n, root = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
write_skeleton(root / "model", shape)
manifest = make_bench_clips(root / "clips", n, 1280, 720, 5.0)
pd.read_csv(manifest).to_csv(root / "m.csv", index=False)
PY
start=$(date +%s.%N)
python3 -m vidcap caption "$dir/m.csv" --model "$dir/model" --max-new-tokens 150 \
    -o "$dir/out.parquet" --overwrite "$@" 2>&1 | grep -v -E "Loading weights|it/s\]$" | tail -25
echo "wall $(python3 -c "import time;print(round(time.time()-$start,1))") s"
python3 - "$dir/out.parquet.run.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
e = d.get("summary", {}).get("engine", {})
print({k: e.get(k) for k in ("model_load_s", "kernel_compile_wait_s", "first_item_s", "first_admit_s", "allocate_s",
                              "capture_s", "first_row_s", "first_row_after_load_s", "first_row_after_start_s",
                              "fast_path", "slots", "prefill_s", "fused_kernels", "attention")})
PY
