"""`vidcap bench --caption-format json --schema NAME`: what decoding constrained to a schema costs.

The same model, clips and process decode twice: once with every slot free (no grammar, the step without
the mask) and once with each slot's grammar mask read inside the CUDA-graph step. Each mode gets its own
engine (a fresh cache, graphs captured with or without the mask) and its own warm-up run, so the figures
compare decode steps only: ms per step, graph replays, and the CPU time per step spent advancing the
matchers and filling and uploading the mask rows. EOS is ignored as in every bench run (a finished JSON
caption then decodes EOS under its mask), so both modes run the same number of steps.
"""

from __future__ import annotations

import gc
from dataclasses import replace
from pathlib import Path

from .clips import make_bench_clips


def with_options(stage, **changes) -> None:
    """Between two measured runs: the stage and its loaded backend take new (frozen) options."""
    stage.options = replace(stage.options, **changes)
    stage.backend.options = replace(stage.backend.options, **changes)


def run_structured(cfg, stage, manifest: Path, root: Path, workers, one_run, measured) -> tuple[list, dict]:
    """(runs, summary) for a free and a constrained decode of the same clips."""
    from ..backends.structured import model_grammar
    from ..schemas import load_schema

    schema = load_schema(stage.options.schema or "")
    backend = stage.backend
    warm = make_bench_clips(root / "warmup", cfg.batch_size, cfg.width, cfg.height, cfg.seconds, distinct=2)
    runs = []
    for constrained in (False, True):
        with_options(stage, constrain=constrained)
        _new_engine(backend)
        label = "constrained to the schema" if constrained else "free (no mask)"
        one_run(stage, warm, root / f"warmup_json_{int(constrained)}.parquet", workers, "warm-up")
        run = measured(stage, manifest, root / f"out_json_{int(constrained)}.parquet", workers, label)
        run.update(_validity(root / f"out_json_{int(constrained)}.parquet"))
        # every clip's tokens, valid or not (an invalid JSON caption is a failed row that still decoded)
        run["tokens_per_s"] = run["completion_tokens"] * run["videos"] / run["wall_s"] if run["wall_s"] else 0.0
        run["grammar"] = model_grammar(backend) is not None
        runs.append(run)
    free, masked = (r.get("engine") or {} for r in runs)
    ms_free, ms_mask = free.get("decode_ms_per_step"), masked.get("decode_ms_per_step")
    summary = {
        "schema": schema.name,
        "decode_ms_per_step_free": ms_free,
        "decode_ms_per_step_constrained": ms_mask,
        "step_overhead": (ms_mask / ms_free - 1.0) if ms_free and ms_mask else None,
        "mask_cpu_ms_per_step": masked.get("mask_cpu_ms_per_step"),
        "graph_replays": [free.get("graph_replays"), masked.get("graph_replays")],
        "eager_steps": [free.get("eager_steps"), masked.get("eager_steps")],
        "valid_share": [r["valid_share"] for r in runs],
    }
    return runs, summary


def _new_engine(backend) -> None:
    """Drop the backend's engine (its cache and graphs) so the next run builds one for the current mode."""
    if getattr(backend, "_engine", None) is None:
        return
    backend._engine = None
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _validity(out: Path) -> dict:
    """Rows captioned (an invalid JSON caption is a `parse` row, captioned all the same) and the share valid."""
    import pandas as pd

    df = pd.read_parquet(out)
    parse = df["error"].fillna("").astype(str).str.startswith("parse:")
    ok = df["status"] == "ok"
    done = df[ok | parse]
    return {
        "ok": int((ok | parse).sum()),
        "prompt_tokens": float(done["prompt_tokens"].mean()) if len(done) else 0.0,
        "completion_tokens": float(done["completion_tokens"].mean()) if len(done) else 0.0,
        "valid_json": int(ok.sum()),
        "valid_share": float(ok.mean()) if len(df) else 0.0,
        "errors": df.loc[~ok & ~parse, "error"].head(3).tolist(),
    }


def format_structured(summary: dict) -> list[str]:
    ms_free, ms_mask = summary["decode_ms_per_step_free"], summary["decode_ms_per_step_constrained"]
    over = summary["step_overhead"]
    lines = [
        f"structured captions ({summary['schema']}): valid JSON {100 * summary['valid_share'][0]:.0f}% free, "
        f"{100 * summary['valid_share'][1]:.0f}% constrained",
    ]
    if ms_free and ms_mask:
        lines.append(
            f"decode step: {ms_free:.2f} ms free, {ms_mask:.2f} ms constrained ({100 * over:+.1f}%); mask fill "
            f"{summary['mask_cpu_ms_per_step'] or 0:.3f} ms CPU per step; graph replays "
            f"{summary['graph_replays'][0]} / {summary['graph_replays'][1]}, eager steps "
            f"{summary['eager_steps'][0]} / {summary['eager_steps'][1]}"
        )
    return lines
