#!/usr/bin/env bash
# Puts the packages the GPU image lacks (PyAV, DuckDB, llguidance) into its Python, from one xz tarball.
# The device call carries at most 64 MiB; the three cp312 manylinux wheels are 63 MB as zips, 43 MB as one
# tar.xz of their unpacked contents, so they travel as .gpusite/site.tar.xz (git-ignored). Build it here:
#   mkdir -p /tmp/site && for w in .wheels/*.whl; do unzip -q -o "$w" -d /tmp/site; done
#   mkdir -p .gpusite && tar cJf .gpusite/site.tar.xz -C /tmp/site .
# usage on the device, first in the command, with carry [".gpusite"]:  bash benchmarks/gpu_site.sh && ...
set -euo pipefail
py=${PYTHON:-python3}
if $py -c "import av, duckdb, llguidance" 2>/dev/null; then exit 0; fi
[ -f .gpusite/site.tar.xz ] || { echo "gpu_site: .gpusite/site.tar.xz is missing; carry it"; exit 1; }
site=$($py -c "import site; print(site.getsitepackages()[0])")
tar xJf .gpusite/site.tar.xz -C "$site"
$py -c "import av, duckdb, llguidance; print('gpu_site: av', av.__version__, 'duckdb', duckdb.__version__, 'llguidance ok')"
