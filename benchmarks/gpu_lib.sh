# Shared by the GPU measurement scripts (issue36_gpu.sh, variants_gpu.sh, structured_gpu.sh); sourced after
# they set `t0`, `budget`, `log` and `py`. The GPU image has no internet and lacks PyAV, DuckDB, llguidance
# and jsonschema: they come from .gpusite/site.tar.xz (benchmarks/gpu_site.sh) when carried, else from the
# wheels in .wheels/ (git-ignored; carry them).

# gpu_setup MODULE...: install what is missing, print the machine, the versions and the commit, then stop
# (exit 1) before any device time goes to benches that would fail on a module still missing
gpu_setup() {
  [ -f .gpusite/site.tar.xz ] && bash benchmarks/gpu_site.sh 2>&1 | tail -2
  local mod p whl pkgs
  for mod in av duckdb "$@"; do
    $py -c "import $mod" 2>/dev/null && continue
    pkgs=("$mod")
    [ "$mod" = jsonschema ] && pkgs=(rpds_py referencing jsonschema_specifications jsonschema)
    for p in "${pkgs[@]}"; do
      for whl in .wheels/"$p"-*.whl; do
        [ -f "$whl" ] && $py -m pip install -q --no-deps --root-user-action=ignore "$whl" 2>&1 | tail -2
      done
    done
  done
  {
    nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    $py -c "import os, torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cpus', os.cpu_count(), 'cuda', torch.cuda.is_available())"
    # COMMIT: written next to a clean `git archive HEAD` export (run from it, so that uncommitted edits in a
    # shared tree are not what gets measured); the device's .git can be older than the checkout
    if [ -f COMMIT ]; then echo "commit $(cat COMMIT) (clean export)"; else git log -1 --format='commit %H %s' 2>/dev/null | cut -c1-120; fi
  } 2>&1 | tee -a "$log"
  local needed
  needed=$(printf '%s, ' av duckdb "$@" torch transformers vidcap.bench.run vidcap.ledger)
  if ! $py -c "import ${needed%, }" 2>>"$log"; then
    echo "=== preflight failed: a module the benches need is missing (see above); nothing run" | tee -a "$log"
    exit 1
  fi
}

left() { echo $(( budget - (SECONDS - t0) )); }

# step NAME CAP MIN CMD...: runs CMD under `timeout` of min(CAP, time left - 5 s); skipped if under MIN s
# (a bench writes its JSON only at the end: one that cannot finish is not worth starting)
step() {
  local name=$1 cap=$2 min=$3; shift 3
  local t; t=$(left); t=$(( t - 5 < cap ? t - 5 : cap ))
  if [ "$t" -lt "$min" ]; then echo "=== $name SKIPPED: $(left) s left" | tee -a "$log"; return; fi
  echo "=== $name (timeout ${t}s, $(( SECONDS - t0 )) s in): $*" | tee -a "$log"
  local s0=$SECONDS
  timeout -k 10 "$t" "$@" 2>&1 | grep --line-buffered -v -E "Loading weights|Writing model|it/s\]$|cap_pixels_per_frame|could not be inferred" | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name rc=$rc in $(( SECONDS - s0 )) s" | tee -a "$log"
}
