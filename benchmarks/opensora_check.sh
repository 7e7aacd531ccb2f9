#!/usr/bin/env bash
# Run Open-Sora's own code over a `vidcap export --to opensora` table: every datautil option that applies and
# one full pass of the training loader (VariableVideoTextDataset + the bucket sampler), in the mid-2024
# environment Open-Sora v1.2.0 was released with. Not part of the test suite.
#
#   benchmarks/opensora_check.sh OPENSORA_SRC TRAIN_CSV [OUT_DIR]
#
# OPENSORA_SRC: a folder holding Open-Sora's `opensora/` and `tools/` (e.g. `git archive v1.2.0 opensora
# tools | tar -x -C /tmp/os120`); nothing is fetched at run time except the packages below.
# The venv is built once at $OPENSORA_VENV (default ~/.cache/vidcap/opensora-venv) with PIP_ARGS passed to pip.
# Prints one markdown table (option, exit code, rows, NaN captions, error) and writes OUT_DIR/results.json.
set -euo pipefail
src=$(cd "${1:?OPENSORA_SRC}" && pwd)
train=$(realpath "${2:?TRAIN_CSV}")
out=$(mkdir -p "${3:-$(mktemp -d)}" && cd "${3:-.}" && pwd)
venv=${OPENSORA_VENV:-$HOME/.cache/vidcap/opensora-venv}
[ -f "$src/tools/datasets/datautil.py" ] || { echo "no tools/datasets/datautil.py under $src" >&2; exit 2; }
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install -q ${PIP_ARGS:-} torch==2.3.1 torchvision==0.18.1 pandas==2.2.2 numpy==1.26.4 av==12.3.0 pyarrow==16.1.0 \
    pandarallel ftfy beautifulsoup4 lingua-language-detector mmengine opencv-python-headless tqdm requests
fi
"$venv/bin/python" -c 'import torch, torchvision, pandas, numpy, av
print("env: torch", torch.__version__, "torchvision", torchvision.__version__, "pandas", pandas.__version__,
      "numpy", numpy.__version__, "av", av.__version__)'
exec "$venv/bin/python" "$(dirname "$0")/opensora_check.py" "$src" "$train" "$out"
