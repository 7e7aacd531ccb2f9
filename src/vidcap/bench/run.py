"""`vidcap bench`: end-to-end throughput of the real captioning path with random weights at real size.

video files -> decode workers -> preprocessing -> vision tower -> projector/pooling -> generate -> rows.
The same CaptionStage and runner users run; only the weights are random (values do not change speed) and
EOS is ignored so every caption is exactly `new_tokens` long.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .structured import with_options


@dataclass
class BenchConfig:
    shape: str = "pllava-13b"  # a bench shape (bench.shapes.SHAPES) or a model dir / preset for --model
    model: str | None = None  # use this model (dir or preset) instead of a random skeleton
    frames: int | None = None
    width: int = 1280
    height: int = 720
    seconds: float = 5.0
    videos: int = 64
    batch_size: int = 16
    new_tokens: int = 150
    lengths: tuple[int, int] | None = None  # each caption ends at a length drawn from A..B (fixed seed)
    resize: int | None = None
    workers: int | None = None
    baseline: bool = False
    gpus: str | None = None  # "1,2": the multi-GPU runner on 1, then 2 GPUs (scaling)
    device: str | None = None
    work_dir: str = ".vidcap-bench"
    options: dict = field(default_factory=dict)  # more CaptionOptions fields
    window: float | None = None  # windows of this many seconds of `seconds`-long videos against pre-cut clips


class _Timer:
    """Wraps a bound method and sums its wall time (results come back to the CPU, so this is synchronous)."""

    def __init__(self, obj, name: str):
        self.total, self.calls = 0.0, 0
        self.spans: list[tuple[float, float, int]] = []
        self.fn = getattr(obj, name)
        setattr(obj, name, self)

    def __call__(self, *a, **kw):
        t = time.perf_counter()
        try:
            return self.fn(*a, **kw)
        finally:
            end = time.perf_counter()
            self.total += end - t
            self.calls += 1
            self.spans.append((t, end, len(a[0]) if a and hasattr(a[0], "__len__") else 0))


def _stage(cfg: BenchConfig, model_dir: str, preset_name: str, fast: bool):
    from ..backends.base import CaptionOptions
    from ..backends.registry import PRESETS, resolve_model
    from ..stages.caption import CaptionStage

    base = PRESETS.get(preset_name)
    preset = resolve_model(model_dir)
    if base is not None:  # frames, positions, prompt and family defaults of the preset this shape stands for
        from dataclasses import replace

        preset = replace(base, name=preset.name, model_id=model_dir)
    max_new = max(cfg.new_tokens, cfg.lengths[1]) if cfg.lengths else cfg.new_tokens
    opts = CaptionOptions(
        num_frames=cfg.frames,
        max_new_tokens=max_new,
        batch_size=cfg.batch_size,
        resize=cfg.resize,
        device=cfg.device,
        ignore_eos=True,
        prepare_on_workers=fast,
        engine=fast,
        lengths=cfg.lengths,
        **cfg.options,
    )
    return CaptionStage(preset, opts)


def _model_dir(cfg: BenchConfig, root: Path) -> tuple[str, str]:
    from .shapes import SHAPES, write_skeleton

    if cfg.model:
        return cfg.model, cfg.model
    if cfg.shape.startswith("tiny-"):
        from ..dev.tiny import build_tiny_model

        out = root / "models" / cfg.shape
        if not (out / "config.json").exists():
            build_tiny_model(out, cfg.shape[len("tiny-") :])
        return str(out), ""
    out = root / "models" / cfg.shape
    if not (out / "config.json").exists():
        write_skeleton(out, cfg.shape)
    return str(out), SHAPES[cfg.shape][1]


def _stages(batch_s: float, t_prep, t_gen, wall: float, engine: dict | None) -> dict:
    """Where the run's time went. Clips that streamed through the engine never pass process_batch: their
    time is the engine's own (prefill calls, decode steps, waiting for frames), not a column of zeros."""
    if engine and engine.get("rows") and not batch_s:
        decode = (engine.get("decode_ms_per_step") or 0.0) * (engine.get("decode_steps") or 0) / 1e3
        spent = engine["prefill_s"] + decode + engine["frames_wait_s"]
        return {
            "engine prefill (vision+prompt)": engine["prefill_s"],
            "engine decode steps": decode,
            "engine waiting for frames": engine["frames_wait_s"],
            "other (start-up, scheduling, merge)": max(0.0, wall - spent),
        }
    return {
        "model (process_batch)": batch_s,
        "preprocess (in main process)": t_prep.total if t_prep else None,
        "generate (vision+prefill+decode)": t_gen.total if t_gen else None,
        "waiting for frames / other": wall - batch_s,
    }


def _one_run(stage, manifest: Path, out: Path, workers, label: str) -> dict:
    from ..runner import RunOptions, run_stage
    from .gpu import BusyMonitor

    backend = stage.backend
    t_prep = _Timer(backend, "prepare") if hasattr(backend, "prepare") else None
    t_gen = _Timer(backend, "generate") if hasattr(backend, "generate") else None
    t_batch = _Timer(stage, "process_batch")
    t_rows = _Timer(stage, "_row")  # one span per caption finished, whichever path made it
    engine = backend.engine() if hasattr(backend, "engine") else None
    if engine is not None:
        engine.reset_stats()
    cuda = _cuda()
    if cuda:
        cuda.reset_peak_memory_stats()
    opts = RunOptions(workers=workers, overwrite=True, progress=False, part_rows=1 << 20, part_seconds=1e9)
    with BusyMonitor() as mon:
        summary = run_stage(stage, manifest, out, opts)
        t_end = time.perf_counter()
    n = summary["processed"]
    wall = summary["wall_s"]
    # steady state: after the first batch's worth of captions (worker start-up and first latency excluded)
    ends = sorted(end for _, end, _ in t_rows.spans)
    first_n = min(len(ends), stage.batch_size)
    first_end = ends[first_n - 1] if ends else t_end
    steady = (n - first_n) / (t_end - first_end) if t_end > first_end and n > first_n else None
    res = {
        "label": label,
        "videos": n,
        "ok": summary["ok"],
        "wall_s": wall,
        "videos_per_s": n / wall if wall else 0.0,
        "steady_videos_per_s": steady,
        "first_batch_s": first_end - (t_end - wall),
        "stage_s": _stages(t_batch.total, t_prep, t_gen, wall, summary.get("engine")),
        "gpu_busy": mon.busy,
        "peak_mem_gib": cuda.max_memory_allocated() / 2**30 if cuda else None,
        "engine": summary.get("engine"),
    }
    for t, obj, name in (
        (t_prep, backend, "prepare"),
        (t_gen, backend, "generate"),
        (t_batch, stage, "process_batch"),
        (t_rows, stage, "_row"),
    ):
        if t is not None:
            setattr(obj, name, t.fn)
    return res


def _cuda():
    try:
        import torch

        return torch.cuda if torch.cuda.is_available() else None
    except ImportError:
        return None


def _measured(stage, manifest: Path, out: Path, workers, label: str) -> dict:
    """One timed run, what its output holds (prompt and new tokens per clip, errors) and new tokens per second."""
    r = _one_run(stage, manifest, out, workers, label)
    r.update(_output_stats(out))
    r["tokens_per_s"] = r["completion_tokens"] * r["ok"] / r["wall_s"] if r["wall_s"] else 0.0
    return r


def _output_stats(out: Path) -> dict:
    import pandas as pd

    df = pd.read_parquet(out)
    ok = df[df["status"] == "ok"]
    # --variants: every variant's tokens count (the plain columns are the first variant's)
    prompt = [c for c in ok.columns if c.startswith("caption_") and c.endswith("_prompt_tokens")] or ["prompt_tokens"]
    new = [c for c in ok.columns if c.startswith("caption_") and c.endswith("_completion_tokens")] or [
        "completion_tokens"
    ]
    return {
        "prompt_tokens": float(ok[prompt].sum(axis=1).mean()) if len(ok) else 0.0,
        "completion_tokens": float(ok[new].sum(axis=1).mean()) if len(ok) else 0.0,
        "errors": df.loc[df["status"] != "ok", "error"].head(3).tolist(),
    }


def _roofline(stage, res: dict, cfg: BenchConfig, peaks: dict) -> dict | None:
    model = getattr(stage.backend, "model", None)
    if model is None or not peaks:
        return None
    from .gpu import roofline_seconds

    lm = vision = 0
    for name, p in model.named_parameters():
        if "vision" in name or "visual" in name:
            vision += p.numel()
        elif "embed_tokens" not in name:
            lm += p.numel()
    tcfg = getattr(model.config, "text_config", model.config)
    heads = getattr(tcfg, "num_key_value_heads", None) or tcfg.num_attention_heads
    head_dim = getattr(tcfg, "head_dim", None) or tcfg.hidden_size // tcfg.num_attention_heads
    kv_bytes = 2 * tcfg.num_hidden_layers * heads * head_dim * 2
    frames = stage.num_frames
    patches = frames * 576  # CLIP-L/14-336 per frame; a lead, not exact for anyres/Qwen
    new = round(res.get("completion_tokens") or cfg.new_tokens)
    floor = roofline_seconds(
        res["videos"], lm, vision, res["prompt_tokens"], new, patches, cfg.batch_size, kv_bytes, peaks
    )
    floor["share_of_roofline"] = floor["floor_s"] / res["wall_s"] if res["wall_s"] else None
    floor["lm_params_b"] = lm / 1e9
    floor["vision_params_b"] = vision / 1e9
    return floor


def run_bench(cfg: BenchConfig) -> dict:
    from ..errors import UsageError
    from .clips import make_bench_clips

    if (
        not cfg.model
        and not cfg.shape.startswith("tiny-")
        and not _cuda()
        and not str(cfg.device or "").startswith("cpu")
    ):
        raise UsageError(
            f"bench shape '{cfg.shape}' builds a real-size model, which needs a CUDA GPU; on a CPU use a "
            "tiny shape (e.g. --shape tiny-qwen2-vl), or pass --device cpu to insist."
        )

    root = Path(cfg.work_dir)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # --window makes its own inputs (bench.windows): clips of the window's length and long videos
    manifest = make_bench_clips(root, cfg.videos, cfg.width, cfg.height, cfg.seconds) if not cfg.window else root
    t_clips = time.perf_counter() - t0
    model_dir, preset_name = _model_dir(cfg, root)
    stage = _stage(cfg, model_dir, preset_name, fast=True)
    if cfg.gpus:  # each GPU worker builds its own model: nothing is loaded here
        from .scaling import run_scaling

        specs = [x.strip() for x in str(cfg.gpus).split(",") if x.strip()]
        report: dict[str, Any] = {
            "config": dict(cfg.__dict__),
            "device": "multi-GPU",
            "clips_s": time.perf_counter() - t0,
            "scaling": run_scaling(cfg, stage, manifest, root, specs),
        }
        (root / "bench.json").write_text(json.dumps(report, indent=2, default=str))
        return report
    t1 = time.perf_counter()
    stage.setup(cfg.device)
    t_load = time.perf_counter() - t1
    teardown, stage.teardown = stage.teardown, lambda: None  # one model (and its compiled graphs) for all runs
    peaks = {}
    if _cuda():
        from .gpu import measure_peaks

        peaks = measure_peaks()
    report = {
        "config": {k: v for k, v in cfg.__dict__.items()},
        "device": peaks.get("name", "cpu"),
        "peaks": peaks,
        "clips_s": t_clips,
        "load_s": t_load,
        "runs": [],
    }
    workers = cfg.workers
    if stage.plan:  # --variants: one caption per clip against N, same clips and model (bench.variants)
        from .variants import run_variants

        report["runs"], report["variants"] = run_variants(cfg, stage, manifest, root, workers, _one_run, _measured)
        teardown()
        (root / "bench.json").write_text(json.dumps(report, indent=2, default=str))
        return report
    if stage.schema is not None:  # --caption-format json: free against constrained decoding (bench.structured)
        from .structured import run_structured

        report["runs"], report["structured"] = run_structured(cfg, stage, manifest, root, workers, _one_run, _measured)
        teardown()
        (root / "bench.json").write_text(json.dumps(report, indent=2, default=str))
        return report
    if cfg.window:  # windows of long videos against pre-cut clips (bench.windows)
        from .windows import run_windows

        report["runs"], report["windows"] = run_windows(cfg, stage, root, workers, _one_run, _measured)
        teardown()
        (root / "bench.json").write_text(json.dumps(report, indent=2, default=str))
        return report
    # warm-up on one batch of other clips: compilation, CUDA graphs and allocator growth stay out of the numbers
    warm = make_bench_clips(root / "warmup", cfg.batch_size, cfg.width, cfg.height, cfg.seconds, distinct=2)
    for fast in [False, True] if cfg.baseline else [True]:
        _set_fast(stage, fast)
        t2 = time.perf_counter()
        _one_run(stage, warm, root / f"warmup_{int(fast)}.parquet", workers, "warm-up")
        report[f"warmup_{'vidcap' if fast else 'baseline'}_s"] = time.perf_counter() - t2
    if cfg.baseline:  # the straightforward path on the same model and inputs, same batch, same process
        _set_fast(stage, False)
        base = _measured(stage, manifest, root / "out_baseline.parquet", workers, "baseline")
        report["runs"].append(base)
        _set_fast(stage, True)
    if cfg.lengths:  # the engine with static batches on the same clips: what continuous batching gains
        with_options(stage, static_batches=True)
        static = _measured(stage, manifest, root / "out_static.parquet", workers, "vidcap, static batches")
        with_options(stage, static_batches=False)
        report["runs"].append(static)
    run = _measured(stage, manifest, root / "out.parquet", workers, "vidcap")
    run["roofline"] = _roofline(stage, run, cfg, peaks)
    report["runs"].append(run)
    if cfg.baseline:
        report["speedup"] = run["videos_per_s"] / max(report["runs"][0]["videos_per_s"], 1e-9)
    if cfg.lengths:
        report["continuous_vs_static"] = run["videos_per_s"] / max(report["runs"][-2]["videos_per_s"], 1e-9)
    teardown()
    (root / "bench.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def failed_rows(report: dict) -> str | None:
    """Why the bench's figures cannot be trusted (rows that did not caption), else None."""
    for r in report.get("runs", []):
        if r.get("ok", 0) < r.get("videos", 0):
            first = (r.get("errors") or ["?"])[0]
            return (
                f"{r['videos'] - r['ok']} of {r['videos']} clips failed in the '{r['label']}' run (first: {first}); "
                "no throughput is reported for failed rows."
            )
    return None


def format_report(report: dict) -> str:
    bad = failed_rows(report)
    if bad:
        return f"bench: {bad}"
    if "scaling" in report:
        from .scaling import format_scaling

        return format_scaling(report["scaling"])
    lines = [
        f"device: {report['device']}  (clips made in {report['clips_s']:.1f} s, model built in {report['load_s']:.1f} s)"
    ]
    for r in report["runs"]:
        busy = f"{100 * r['gpu_busy']:.0f}%" if r.get("gpu_busy") is not None else "n/a"
        mem = f"{r['peak_mem_gib']:.1f} GiB" if r.get("peak_mem_gib") is not None else "n/a"
        lines.append(
            f"[{r['label']}] {r['videos']} videos ({r['ok']} ok) in {r['wall_s']:.1f} s: "
            f"{r['videos_per_s']:.2f} videos/s, {r['tokens_per_s']:.0f} new tokens/s, GPU busy {busy}, "
            f"peak memory {mem}, prompt {r['prompt_tokens']:.0f} tokens, {r['completion_tokens']:.0f} new tokens/video"
        )
        if r.get("steady_videos_per_s"):
            lines.append(
                f"    steady state after the first batch: {r['steady_videos_per_s']:.2f} videos/s "
                f"(first batch done at {r['first_batch_s']:.1f} s)"
            )
        for k, v in r["stage_s"].items():
            if v is not None:
                lines.append(f"    {k:<36} {v:8.2f} s")
        if r.get("engine") and r["label"] != "baseline":
            lines.append(_engine_line(r["engine"]))
        roof = r.get("roofline")
        if roof:
            lines.append(
                f"    roofline floor {roof['floor_s']:.2f} s (prefill+vision {roof['t_prefill']:.2f} s, decode "
                f"{roof['t_decode']:.2f} s) -> {100 * roof['share_of_roofline']:.0f}% of the roofline; "
                f"LM {roof['lm_params_b']:.2f}B + vision {roof['vision_params_b']:.2f}B params"
            )
        if r.get("errors"):
            lines.append(f"    errors: {r['errors']}")
    if "variants" in report:
        from .variants import format_variants

        lines += format_variants(report["variants"])
    if "windows" in report:
        from .windows import format_windows

        lines += format_windows(report["windows"])
    if "structured" in report:
        from .structured import format_structured

        lines += format_structured(report["structured"])
    if "continuous_vs_static" in report:
        lines.append(
            f"continuous batching over static batches (same engine, same clips): {report['continuous_vs_static']:.2f}x"
        )
    if "speedup" in report:
        lines.append(f"speed-up over the baseline path: {report['speedup']:.2f}x")
        if report["speedup"] < 1.0:
            lines.append(f"WARNING: vidcap was slower than --baseline on the same clips ({report['speedup']:.2f}x)")
    return "\n".join(lines)


def _engine_line(e: dict) -> str:
    if not e.get("fast_path"):
        return f"    engine: FAST PATH OFF ({e.get('fast_path_reason')})"
    ms = e.get("decode_ms_per_step")
    return (
        f"    engine: {e['slots']} slots x {e['cache_tokens']} tokens, shared prefix {e['shared_prefix_tokens']} tokens, "
        f"{e['graph_replays']} graph replays / {e['eager_steps']} eager steps, "
        + (f"{ms:.1f} ms per decode step, " if ms else "")
        + f"{e.get('decode_tokens_per_s') or 0:.0f} decode tokens/s, slot occupancy {e.get('slot_occupancy') or 0:.2f}, "
        f"prefill {e['prefill_s']:.1f} s in {e['prefills']} calls, fallback rows {e['fallback_rows']}"
        f"\n    engine busy {100 * (e.get('busy_share') or 0):.0f}% of the run, waited "
        f"{e.get('frames_wait_s') or 0:.1f} s for frames ({e.get('frames_wait_after_first_s') or 0:.1f} s after the first clip)"
    )


def _set_fast(stage, fast: bool) -> None:
    """vidcap's path (inputs prepared on the decode workers, its own engine) or the plain generate() one."""
    with_options(stage, prepare_on_workers=fast, engine=fast)
