"""The end-of-run summary as a person reads it. run.json keeps every figure as data; the terminal gets one
line per topic (flags, API use, tokens, cost, engine) in words, with nothing printed for what does not apply."""

from __future__ import annotations

# Printed by the run's first two lines (counts, speed) or not meant for people.
SHOWN_ABOVE = {"rows", "unique", "duplicates", "skipped", "processed", "ok", "failed", "wall_s", "rows_per_s", "config"}
API = ("api_requests", "api_attempts", "api_retries", "api_errors")
TOKENS = ("prompt_tokens", "completion_tokens", "total_tokens")
COST = ("price_in", "price_out", "price_source", "cost_usd", "cost_usd_output", "budget_usd")


def extra_lines(summary: dict) -> list[str]:
    """The lines after `done:` and `processed:` for a run summary dict."""
    rest = {k: v for k, v in summary.items() if k not in SHOWN_ABOVE}
    lines = []
    flags = rest.pop("flags", None)
    if isinstance(flags, dict) and summary.get("ok"):  # no caption made: nothing to flag or to clear
        lines.append(_flags(flags))
    if any(k in rest for k in API):
        lines.append(_api({k: rest.pop(k, None) for k in API}))
    if any(rest.get(k) for k in TOKENS):
        p, c = rest.get("prompt_tokens") or 0, rest.get("completion_tokens") or 0
        lines.append(f"tokens: {p:,} prompt + {c:,} completion")
    for k in TOKENS:
        rest.pop(k, None)
    if any(k in rest for k in COST):
        lines.append(_cost({k: rest.pop(k, None) for k in COST}, summary.get("model")))
    estimate = rest.pop("estimate", None)
    if isinstance(estimate, dict) and estimate.get("cost_usd") is not None:
        lines.append(f"estimate before the run: about ${estimate['cost_usd']:.4f}")
    near = rest.pop("near_dup", None)
    if isinstance(near, dict) and near.get("clusters"):
        lines.append(f"near dup: {_value(near)}")
    engine = rest.pop("engine", None)
    fast = rest.pop("fast_path", None)
    if isinstance(engine, dict) or fast is not None:
        lines.append(_engine(engine or {}, fast))
    for k, v in rest.items():
        if _nothing(v):  # `parse failed: 0`, `cost_usd None`: lines that say nothing
            continue
        lines.append(f"{k.replace('_', ' ')}: {_value(v)}")
    return lines


def _nothing(v) -> bool:
    if isinstance(v, dict):
        return all(_nothing(x) for x in v.values())
    return v is None or v == [] or (v == 0 and not isinstance(v, bool))


def _value(v) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {_value(x)}" for k, x in v.items() if x is not None) or "none"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v)) or "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _flags(flags: dict) -> str:
    flagged = int(flags.get("flagged", 0) or 0)
    kinds = [f"{k} {v}" for k, v in flags.items() if k != "flagged" and v]
    if not flagged and not kinds:
        return "flags: none (no caption was empty, cut off, repetitive, boilerplate or a duplicate)"
    return f"flags: {flagged} captions flagged ({', '.join(kinds)}); see the `flags` column"


def _api(api: dict) -> str:
    n = api.get("api_requests") or 0
    text = f"api: {n} request{'' if n == 1 else 's'}"
    if api.get("api_retries"):
        text += f", {api['api_retries']} retried"
    if api.get("api_errors"):
        text += f"; errors: {_value(api['api_errors'])}"
    return text


def _cost(cost: dict, model) -> str:
    if cost.get("cost_usd") is None:
        return (
            "cost: unknown (no price known for this model; pass --price-in and --price-out, USD per "
            "million tokens, to have it computed)"
        )
    source = "your --price-in/--price-out" if cost.get("price_source") == "user" else "vidcap's price table"
    text = f"cost: ${cost['cost_usd']:.4f} this run"
    if cost.get("cost_usd_output") is not None:
        text += f", ${cost['cost_usd_output']:.4f} for this output over every run"
    if cost.get("budget_usd") is not None:
        text += f" (--budget ${cost['budget_usd']:.2f})"
    return text + (
        f"; USD per million tokens: {cost.get('price_in'):g} in, {cost.get('price_out'):g} out, from {source}"
    )


def _engine(engine: dict, fast) -> str:
    fast = engine.get("fast_path", fast)
    if fast:
        v = engine.get("variants") or {}
        shared = (
            f"; --variants: {v.get('clips_shared')} clips prefilled their video once ({v.get('prefill_tokens_saved')} "
            f"prompt tokens saved), {v.get('full_prefill_clips')} prefilled per variant"
            if v
            else ""
        )
        return "engine: fast path engaged" + shared
    reason = engine.get("fast_path_reason")
    return "engine: generate()" + (f" ({reason})" if reason else "")


def merge_extras(extras: list[dict]) -> dict:
    """Several workers' stage figures as one: numbers add up (tokens, cost), the rest is the first seen."""
    merged: dict = {}
    for extra in extras:
        for k, v in extra.items():
            if isinstance(v, bool):  # e.g. fast_path: true only if it held on every worker
                merged[k] = merged.get(k, True) and v
                continue
            both_numbers = isinstance(v, (int, float)) and isinstance(merged.get(k, 0), (int, float))
            merged[k] = merged.get(k, 0) + v if both_numbers else merged.get(k, v)
    return merged
