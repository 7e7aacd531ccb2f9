#!/usr/bin/env bash
# One device call: install the carried PyAV wheel, then run `vidcap bench` for the shapes given.
# usage: benchmarks/gpu.sh SHAPE:VIDEOS:BATCH[:EXTRA ARGS...] ...   (run by the device tool; $OUT collects JSON)
set -uo pipefail
python3 -m pip install -q --no-deps --root-user-action=ignore .wheels/av-*.whl 2>&1 | tail -2
export PYTHONPATH=src TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader
python3 -c "import torch, transformers, av; print('torch', torch.__version__, 'transformers', transformers.__version__, 'av', av.__version__, 'cpus', __import__('os').cpu_count())"
n=0
for spec in "$@"; do
  n=$((n+1))
  IFS=: read -r shape videos batch extra <<<"$spec"
  echo "=== $shape videos=$videos batch=$batch $extra"
  python3 -m vidcap bench --shape "$shape" --videos "$videos" --batch-size "$batch" --new-tokens 150 \
      --work-dir "/tmp/bench-$shape" $extra 2>&1 | grep -v -E "Loading weights|Writing model|it/s\]$"
  cp "/tmp/bench-$shape/bench.json" "${OUT:-/tmp}/bench-$n-$shape-$videos-$batch.json" 2>/dev/null
done
