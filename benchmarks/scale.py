"""Bookkeeping at scale: an N-row manifest of missing files run with the `fake` model, so only the run's
bookkeeping (plan, parts, merge) and its per-row dispatch are timed.

For each scenario: wall time, rows/s, peak memory of the whole process tree (sampled every 0.1 s with
psutil, DuckDB's memory included) and the ledger's own phase times (plan_s, run_s, merge_s from the
output's sidecar):
  fresh   every row new
  resume  90% of the rows saved as parts (a run over the first 90% kept its parts, its output removed);
          `first_row_s` is the time until the first new part file appears (one part = --part-rows rows)
  noop    every row done (a rerun over the finished output)
and the cost of one os.stat per row (the file size/mtime identity check) over the manifest's paths.

usage: nice -n 10 python benchmarks/scale.py N [--part-rows R] [--dir DIR] [--only fresh,resume,noop,stat,planfile]
       [--workers W]  (decode processes; 0, the default, loads rows in a thread of the run's process)
       [--output parquet|csv|dataset]
       [--gpus cpu:2]  (the host executor: coordinator + 2 workers)
       [--torchrun 2]  (launched by torchrun with 2 ranks)
--output dataset writes `-o DIR/` (a Parquet dataset folder, vidcap.dataset) instead of one .parquet file.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.csv as pcsv

SRC = str(Path(__file__).resolve().parents[1] / "src")


def build_manifest(path: Path, n: int) -> None:
    """`path` column of missing files plus two user columns, written in 1M-row slices."""
    if path.exists():
        return
    tmp = path.with_suffix(".tmp")
    with pcsv.CSVWriter(tmp, pa.schema([("path", pa.string()), ("label", pa.string()), ("n", pa.int64())])) as w:
        for start in range(0, n, 1_000_000):
            k = min(1_000_000, n - start)
            idx = range(start, start + k)
            w.write_table(
                pa.table(
                    {
                        "path": [f"/nonexistent/clips/{i % 1000:03d}/v{i:010d}.mp4" for i in idx],
                        "label": [f"label {i % 97}" for i in idx],
                        "n": list(idx),
                    }
                )
            )
    tmp.rename(path)


EXTRA: list[str] = []  # options every run gets (--gpus cpu:2)
LAUNCH: list[str] = [sys.executable, "-m", "vidcap"]  # or torchrun's (--torchrun N)


def run(manifest: Path, out: Path, part_rows: int, extra=(), watch: Path | None = None, workers: int = 0) -> dict:
    """One `vidcap caption` run; wall, peak RSS of its process tree, and the first new part's time."""
    cmd = [
        *LAUNCH,
        "caption",
        str(manifest),
        "-o",
        str(out),
        "--model",
        "fake",
        "--workers",
        str(workers),
        "-q",
        "--part-rows",
        str(part_rows),
        *EXTRA,
        *extra,
    ]
    env = dict(os.environ, PYTHONPATH=SRC)
    before = set(_parts(watch)) if watch else set()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    top, peak, first = psutil.Process(proc.pid), 0, None
    while proc.poll() is None:
        try:
            rss = sum(p.memory_info().rss for p in [top, *top.children(recursive=True)])
            peak = max(peak, rss)
        except psutil.Error:
            pass
        if watch and first is None and set(_parts(watch)) - before:
            first = time.monotonic() - t0
        time.sleep(0.1)
    wall = time.monotonic() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime  # the run's CPU seconds, its children too
    err = proc.stderr.read()
    if proc.returncode not in (0, 1):  # 1: every row failed (they are missing files), as intended
        raise SystemExit(f"run failed ({proc.returncode}): {err[-2000:]}")
    summary = json.loads(out.with_name(out.name + ".run.json").read_text())["summary"]
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "peak_rss_mb": round(peak / 2**20),  # sampled sum over the process tree
        "max_rss_mb": round(ru.ru_maxrss / 2**10),  # the largest single process (kernel's figure)
        "first_row_s": first,
        "processed": summary["processed"],
        "skipped": summary["skipped"],
        "ledger": summary.get("ledger"),
        "rest_s": round(
            wall - sum(v for k, v in (summary.get("ledger") or {}).items() if "_s" in k and "cpu" not in k), 1
        ),
        **output_size(out),
    }  # merge, start, exit


def _parts(folder: Path) -> list[str]:
    return [p.name for p in folder.glob("part-*.parquet")] if folder.exists() else []


def stat_cost(manifest: Path, limit: int) -> dict:
    """Seconds for one os.stat per path (missing files here: the lookup a size/mtime check costs)."""
    paths = pcsv.read_csv(manifest, convert_options=pcsv.ConvertOptions(include_columns=["path"]))["path"]
    paths = paths.slice(0, limit).to_pylist()
    t0 = time.monotonic()
    for p in paths:
        try:
            os.stat(p)
        except OSError:
            pass
    missing = time.monotonic() - t0
    here = [str(Path(__file__).resolve())] * min(len(paths), 1_000_000)
    t0 = time.monotonic()
    for p in here:
        os.stat(p)
    existing = time.monotonic() - t0
    return {
        "rows": len(paths),
        "missing_s": round(missing, 2),
        "existing_us_per_row": round(1e6 * existing / max(1, len(here)), 2),
    }


def plan_file_cost(manifest: Path, work: Path, world: int = 2) -> dict:
    """torchrun on a large manifest: rank 0's plan (read, key, anti-join) and its plan file, then each of
    `world` ranks streaming its share of that file, against every rank running the plan itself."""
    sys.path.insert(0, SRC)
    from vidcap.backends.base import CaptionOptions
    from vidcap.backends.registry import resolve_model
    from vidcap.ledger import Ledger
    from vidcap.ledger_plan import PlanRows, plan_path, write_plan
    from vidcap.parts import PartStore
    from vidcap.session import run_fingerprint
    from vidcap.stages.caption import CaptionStage

    stage = CaptionStage(resolve_model("fake"), CaptionOptions(num_frames=2))
    out = work / "planfile.parquet"
    _clear(out)
    store = PartStore(out, run_fingerprint(stage))
    store.open({})
    try:
        t0, c0 = time.monotonic(), time.process_time()
        led = Ledger(stage, manifest, store)
        led.ingest()
        led.refresh(prior=True)
        led.plan()
        t1, c1 = time.monotonic(), time.process_time()
        path = plan_path(store)
        n = write_plan(led, path)
        t2, c2 = time.monotonic(), time.process_time()
        led.close()
        shares = []
        for rank in range(world):
            t3, c3 = time.monotonic(), time.process_time()
            rows = PlanRows(path, rank, world)
            got = 0
            while (part := rows.take(4096)) is not None:
                got += len(part)
            shares.append({"rows": got, "wall_s": round(time.monotonic() - t3, 2),
                           "cpu_s": round(time.process_time() - c3, 2)})  # fmt: skip
        size = path.stat().st_size
    finally:
        store.close()
        _clear(out)
    return {
        "plan_wall_s": round(t1 - t0, 2),
        "plan_cpu_s": round(c1 - c0, 2),
        "write_plan_wall_s": round(t2 - t1, 2),
        "write_plan_cpu_s": round(c2 - c1, 2),
        "plan_file_mb": round(size / 2**20, 1),
        "plan_rows": n,
        "shares": shares,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("--part-rows", type=int, default=4096)
    ap.add_argument("--dir", default="/tmp/vidcap-scale")
    ap.add_argument("--only", default="fresh,resume,noop,stat")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--synthetic", action="store_true", help="write the resume's 90%% parts directly (fast)")
    ap.add_argument("--output", default="parquet", choices=["parquet", "csv", "dataset"])
    ap.add_argument("--gpus", help="run on the host executor, e.g. cpu:2 (a coordinator and 2 worker processes)")
    ap.add_argument("--torchrun", type=int, help="launch with torchrun --standalone --nproc_per_node N")
    args = ap.parse_args()
    if args.gpus:
        EXTRA.extend(["--gpus", args.gpus])
    if args.torchrun:
        LAUNCH[1:] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.torchrun)]
        LAUNCH.extend(["-m", "vidcap"])
    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    n, only = args.n, args.only.split(",")
    manifest = work / f"m{n}.csv"
    head = work / f"m{n}_90.csv"
    t0 = time.monotonic()
    build_manifest(manifest, n)
    if not head.exists():
        with open(manifest, "rb") as src, open(head, "wb") as dst:
            for i, line in enumerate(src):
                if i > n * 9 // 10:
                    break
                dst.write(line)
    print(
        f"manifest: {n} rows, {manifest.stat().st_size / 2**20:.0f} MB, built in {time.monotonic() - t0:.0f} s",
        flush=True,
    )
    results = {}
    out = work / (f"o{n}" if args.output == "dataset" else f"o{n}.{args.output}")
    if "fresh" in only:
        _clear(out)
        results["fresh"] = run(manifest, out, args.part_rows, workers=args.workers)
        print("fresh", results["fresh"], flush=True)
    if "resume" in only:
        _clear(out)
        parts = out.with_name(out.name + ".parts")
        if args.synthetic:
            synthetic_parts(work, manifest, out, n * 9 // 10, args.part_rows)
        else:
            run(head, out, args.part_rows, ["--keep-parts"])  # 90% saved as parts ...
            _remove(out)  # ... and no output: the state of a run stopped at 90%
            out.with_name(out.name + ".run.json").unlink()
        nfiles = sum(1 for _ in parts.rglob("*.parquet"))
        results["resume"] = run(manifest, out, args.part_rows, watch=parts, workers=args.workers) | {
            "part_files": nfiles
        }
        print("resume", results["resume"], flush=True)
    if "noop" in only:
        if not out.exists():
            run(manifest, out, args.part_rows)
        results["noop"] = run(manifest, out, args.part_rows)
        print("noop", results["noop"], flush=True)
    if "planfile" in only:
        results["planfile"] = plan_file_cost(manifest, work)
        print("planfile", results["planfile"], flush=True)
    if "stat" in only:
        results["stat"] = stat_cost(manifest, n)
        print("stat", results["stat"], flush=True)
    for r in results.values():
        if "wall_s" in r:
            r["rows_per_s"] = round(n / r["wall_s"])
            r["rows_per_cpu_s"] = round(n / max(r["cpu_s"], 1e-9))
    tag = f"-gpus-{args.gpus.replace(':', '')}" if args.gpus else ""
    tag += f"-torchrun{args.torchrun}" if args.torchrun else ""
    (work / f"results-{n}{tag}.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


def synthetic_parts(work: Path, manifest: Path, out: Path, done: int, part_rows: int) -> None:
    """The parts a run stopped after `done` rows leaves (compacted files of 100 parts each), written directly:
    a 1-row run gives run.json and the part schema, the rows are the manifest's first `done` rows."""
    import hashlib

    import pyarrow.parquet as pq

    one = work / "one.csv"
    one.write_text("path\n/nonexistent/one.mp4\n")
    run(one, out, part_rows, ["--keep-parts"])
    _remove(out)
    out.with_name(out.name + ".run.json").unlink()
    parts = out.with_name(out.name + ".parts")
    schema = pq.read_schema(next(parts.glob("part-*.parquet")))
    for p in parts.glob("part-*.parquet"):
        p.unlink()
    paths = pcsv.read_csv(manifest, convert_options=pcsv.ConvertOptions(include_columns=["path"]))["path"]
    per_file = 100 * part_rows
    home = parts / "compact" / "w0"
    for k, start in enumerate(range(0, done, per_file)):
        chunk = paths.slice(start, min(per_file, done - start)).to_pylist()
        cols = {
            "_vidcap_rid": [hashlib.sha1(p.encode()).hexdigest()[:20] for p in chunk],
            "status": ["failed"] * len(chunk),
            "error": ["missing: no such file"] * len(chunk),
        }
        table = pa.table({f.name: cols.get(f.name, pa.nulls(len(chunk), f.type)) for f in schema})
        dest = home / f"{k // 1000:04d}" / f"c-{k:016x}-{k:06d}.parquet"
        dest.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, dest)


def _clear(out: Path) -> None:
    _remove(out)
    out.with_name(out.name + ".run.json").unlink(missing_ok=True)
    shutil.rmtree(out.with_name(out.name + ".parts"), ignore_errors=True)


def _remove(out: Path) -> None:
    if out.is_dir():
        shutil.rmtree(out)
    else:
        out.unlink(missing_ok=True)


def output_size(out: Path) -> dict:
    files = [p for p in out.iterdir() if p.suffix == ".parquet"] if out.is_dir() else [out]
    return {"output_mb": round(sum(p.stat().st_size for p in files) / 2**20), "output_files": len(files)}


if __name__ == "__main__":
    main()
