"""Budgets for API runs: an estimate of tokens and cost before the first request, a spending cap
(`--budget USD`) that stops a run cleanly, and providers' per-request image limits.

The estimate follows OpenAI's published accounting for image inputs: `detail=low` costs 85 tokens per
image; `high` (and `auto`, counted as high so the estimate errs high) fits the image in 2048x2048, scales
its short side to 768, and costs 170 per 512-pixel tile plus 85. Text is about 4 characters per token.
A caption's length is not known before it is written: the estimate assumes `OUTPUT_SHARE` of the token
limit and prints the ceiling (every caption at the limit) beside it.
"""

from __future__ import annotations

import math
import sys
from urllib.parse import urlsplit

from .errors import FatalRunError

OUTPUT_SHARE = 0.6  # captions usually end well before the token limit; the ceiling is printed too
TEXT_OVERHEAD = 7  # tokens a chat message adds around its content
CHARS_PER_TOKEN = 4.0
PROBE_FILES = 8  # clips probed for their frame size when the manifest has no width/height columns

# Images one request may carry, by API host (as documented by each provider when written).
HOST_IMAGE_LIMITS = {
    "api.openai.com": 500,
    "openai.azure.com": 10,  # Azure OpenAI GPT-4 Turbo with Vision / GPT-4o chat requests
    "generativelanguage.googleapis.com": 3000,  # Gemini's OpenAI-compatible endpoint
    "api.anthropic.com": 100,
    "api.together.xyz": 8,
}


class BudgetSpent(FatalRunError):
    """--budget reached: the run stops before the next batch; finished rows are saved."""

    def __init__(self, budget: float, spent: float):
        super().__init__(
            f"the budget of ${budget:.2f} is spent (${spent:.4f} so far); finished rows are saved. "
            "Run the same command with a higher --budget to continue."
        )


def image_limit(base_url: str, max_images: int | None) -> tuple[int, str] | None:
    """(images per request, where the limit comes from) for this endpoint, None when unknown and unset."""
    if max_images is not None:
        return int(max_images), "--max-images"
    host = (urlsplit(base_url).hostname or "").lower()
    for known, limit in HOST_IMAGE_LIMITS.items():
        if host == known or host.endswith("." + known):
            return limit, host
    return None


def image_tokens(width: int, height: int, detail: str) -> int:
    """Prompt tokens one image costs at this detail (OpenAI's tiling rule)."""
    if detail == "low" or width <= 0 or height <= 0:
        return 85
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return 170 * math.ceil(w / 512) * math.ceil(h / 512) + 85


def text_tokens(text: str) -> int:
    return math.ceil(len(text or "") / CHARS_PER_TOKEN) + TEXT_OVERHEAD


def resized(width: int, height: int, short: int | None) -> tuple[int, int]:
    """The size frames have after --resize (short side at most `short`)."""
    if not short or min(width, height) <= short:
        return width, height
    s = short / min(width, height)
    return max(1, round(width * s)), max(1, round(height * s))


def frame_size(rows, probe=PROBE_FILES) -> tuple[int, int]:
    """A typical frame size of the manifest: its width/height columns, else the first clips probed."""
    import pandas as pd

    if {"width", "height"} <= set(rows.columns):
        w, h = pd.to_numeric(rows["width"], errors="coerce"), pd.to_numeric(rows["height"], errors="coerce")
        if w.notna().any() and h.notna().any():
            return int(w.median()), int(h.median())
    from .frames import sample_frames
    from .manifest import ABSPATH

    sizes = []
    for path in list(rows.get(ABSPATH, rows.get("path", [])))[:probe]:
        try:
            fr = sample_frames(path, 1)
        except Exception:  # noqa: BLE001, S112  (a bad file is that row's error later, not the estimate's)
            continue
        sizes.append((fr.width, fr.height))
    if not sizes:
        return 0, 0
    sizes.sort()
    return sizes[len(sizes) // 2]


def estimate(stage, rows) -> dict:
    """Tokens and cost of captioning `rows` (the selected manifest rows) with this caption stage."""
    from .backends.api_common import price_for

    opts = stage.options
    width, height = resized(*frame_size(rows), opts.resize)
    per_image = image_tokens(width, height, opts.detail)
    try:
        prompt = stage.picker(None, False)
    except Exception:  # noqa: BLE001  (a prompt that needs each row's text: its template is near enough)
        prompt = stage.prompt_template or ""
    per_row_in = text_tokens(prompt) + stage.num_frames * per_image
    limit = int(opts.max_new_tokens or 256)
    n = len(rows)
    est_in, est_out, most_out = n * per_row_in, int(n * limit * OUTPUT_SHARE), n * limit
    pin, pout, source = price_for(stage.backend.model_label(), opts.price_in, opts.price_out)
    cost = most = None
    if pin is not None:
        cost = round((est_in * pin + est_out * pout) / 1e6, 4)
        most = round((est_in * pin + most_out * pout) / 1e6, 4)
    return {
        "rows": n,
        "frames": stage.num_frames,
        "frame_size": f"{width}x{height}",
        "detail": opts.detail,
        "image_tokens": per_image,
        "prompt_tokens": est_in,
        "completion_tokens": est_out,
        "completion_tokens_max": most_out,
        "cost_usd": cost,
        "cost_usd_max": most,
        "price_source": source,
    }


def describe(est: dict, budget: float | None) -> str:
    """The estimate as the sentences printed before the first request."""
    text = (
        f"vidcap: estimate for {est['rows']} rows: {est['frames']} frames of {est['frame_size']} at detail="
        f"{est['detail']} ({est['image_tokens']} tokens each), {est['prompt_tokens']:,} prompt tokens and about "
        f"{est['completion_tokens']:,} completion tokens (at most {est['completion_tokens_max']:,})"
    )
    if est["cost_usd"] is None:
        return text + "; no price known for this model (give --price-in and --price-out to see a cost)."
    text += f"; about ${est['cost_usd']:.2f} (at most ${est['cost_usd_max']:.2f})."
    if budget is not None and est["cost_usd"] > budget:
        share = budget / est["cost_usd"] if est["cost_usd"] else 1.0
        text += f" The --budget of ${budget:.2f} covers about {share:.0%} of it; the run will stop there."
    return text


def print_estimate(stage, manifest, ropts) -> dict | None:
    """Print the estimate for an API caption run before anything is sent (None for other backends)."""
    if getattr(stage.backend, "name", "") != "openai":
        return None
    from .session import select_rows

    est = estimate(stage, select_rows(stage, manifest, ropts))
    print(describe(est, stage.options.budget), file=sys.stderr)
    stage.cost_estimate = est  # the summary puts it beside the counted cost
    return est
