"""The end-of-run summary as a person reads it. run.json keeps every figure as data; the terminal gets one
line per topic (flags, API use, tokens, cost, engine) in words, with nothing printed for what does not apply."""

from __future__ import annotations

# Printed by the run's first two lines (counts, speed) or not meant for people.
SHOWN_ABOVE = {"rows", "unique", "duplicates", "skipped", "processed", "ok", "failed", "wall_s", "rows_per_s"}
API = ("api_requests", "api_attempts", "api_retries", "api_errors")
TOKENS = ("prompt_tokens", "completion_tokens", "total_tokens")
COST = ("price_in", "price_out", "price_source", "cost_usd")


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
    engine = rest.pop("engine", None)
    fast = rest.pop("fast_path", None)
    if isinstance(engine, dict) or fast is not None:
        lines.append(_engine(engine or {}, fast))
    for k, v in rest.items():
        if v is None or v == {} or v == []:
            continue
        lines.append(f"{k.replace('_', ' ')}: {_value(v)}")
    return lines


def _value(v) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {_value(x)}" for k, x in v.items()) or "none"
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
    return (
        f"cost: ${cost['cost_usd']:.4f} (USD per million tokens: {cost.get('price_in'):g} in, "
        f"{cost.get('price_out'):g} out, from {source})"
    )


def _engine(engine: dict, fast) -> str:
    fast = engine.get("fast_path", fast)
    if fast:
        return "engine: fast path engaged"
    reason = engine.get("fast_path_reason")
    return "engine: generate()" + (f" ({reason})" if reason else "")
