"""`vidcap bench --variants short,dense`: one caption per clip against N per clip, same model, same clips,
same process. The one-variant run captions with the variant that has the highest token limit (the long
caption a run makes anyway); the ratio of seconds per clip says what each extra variant costs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path


def single_variant(plan) -> str:
    """The variant the one-variant run uses: the highest token limit in this run, then the highest of the
    prompt's own, then the first."""
    own = [s.max_new_tokens or 0 for s in plan.specs]
    return plan.names[max(range(len(own)), key=lambda i: (plan.limits[i], own[i], -i))]


def stage_with(stage, names: tuple[str, ...], max_new: int):
    """A caption stage like `stage` with other --variants, on `stage`'s loaded backend."""
    from ..stages.caption import CaptionStage

    opts = replace(stage.options, variants=names, max_new_tokens=max_new)
    other = CaptionStage(stage.preset, opts)
    other.backend = stage.backend
    return other


def run_variants(cfg, stage, manifest: Path, root: Path, workers, one_run, measured) -> tuple[list, dict]:
    """The two runs (after a warm-up of each) and the comparison."""
    plan = stage.plan
    names = tuple(plan.names)
    max_new = max(cfg.new_tokens, cfg.lengths[1]) if cfg.lengths else cfg.new_tokens
    single = stage_with(stage, (single_variant(plan),), max_new)
    warm_dir = root / "warmup"
    from .clips import make_bench_clips

    warm = make_bench_clips(warm_dir, cfg.batch_size, cfg.width, cfg.height, cfg.seconds, distinct=2)
    for s, tag in ((single, "1"), (stage, "n")):
        one_run(s, warm, root / f"warmup_variants_{tag}.parquet", workers, "warm-up")
    runs = []
    for s, label, out in (
        (single, f"1 variant ({single.plan.names[0]})", "out_variants_1.parquet"),
        (stage, f"{len(names)} variants ({','.join(names)})", "out_variants_n.parquet"),
    ):
        runs.append(measured(s, manifest, root / out, workers, label))
    one, many = runs
    cost = one["videos_per_s"] / max(many["videos_per_s"], 1e-9)
    e1, en = one.get("engine") or {}, many.get("engine") or {}
    summary = {
        "variants": list(names),
        "single": single.plan.names[0],
        "cost_ratio": cost,  # seconds per clip with N variants over seconds per clip with one
        "tokens_per_s": [one["tokens_per_s"], many["tokens_per_s"]],
        "prefill_s": [e1.get("prefill_s"), en.get("prefill_s")],
        "decode_steps": [e1.get("decode_steps"), en.get("decode_steps")],
        "shared": en.get("variants"),
    }
    return runs, summary


def format_variants(v: dict) -> list[str]:
    shared = v.get("shared") or {}
    lines = [
        f"variants {','.join(v['variants'])} vs 1 variant ({v['single']}), same clips and model: "
        f"{v['cost_ratio']:.2f}x the time per clip; new tokens/s {v['tokens_per_s'][0]:.0f} -> {v['tokens_per_s'][1]:.0f}",
        f"    prefill {_num(v['prefill_s'][0])} s -> {_num(v['prefill_s'][1])} s, decode steps "
        f"{v['decode_steps'][0]} -> {v['decode_steps'][1]}",
    ]
    if shared:
        lines.append(
            f"    shared visual prefill: {shared.get('clips_shared')} clips, {shared.get('prefill_tokens_saved')} "
            f"prompt tokens not prefilled again, {shared.get('suffix_tokens')} suffix tokens in "
            f"{shared.get('suffix_prefill_s')} s; full prefill per variant for {shared.get('full_prefill_clips')} clips"
        )
    return lines


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"
