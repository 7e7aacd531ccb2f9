"""Budgets for API runs: an estimate of tokens and cost before the first request, a spending ceiling
(`--budget USD`) on what an output costs over every run that writes it, and providers' per-request image
limits.

The ceiling is kept by `backends.spend.SpendGate`, asked before every request; what an output has cost so far
lives in `<output>.spend.json` beside the output (see SpendBook), so a rerun of the same command knows what
earlier runs spent. `--overwrite` does not clear it (money spent is spent); delete the file to count from zero.

The estimate follows OpenAI's published accounting for image inputs (see backends.spend). A caption's length
is not known before it is written: the estimate assumes `OUTPUT_SHARE` of the token limit and prints the
ceiling (every caption at the limit) beside it.
"""

from __future__ import annotations

import json
import os
import sys
import time

from .backends.spend import BudgetSpent, SpendGate, budget_stop, image_tokens, text_tokens
from .errors import FatalRunError, first_line
from .storage import as_path, is_remote, put_bytes
from .table_ops import selected_sample

__all__ = ["BudgetSpent", "SpendBook", "attach_spend", "budget_stop", "image_tokens", "text_tokens"]

OUTPUT_SHARE = 0.6  # captions usually end well before the token limit; the ceiling is printed too
PROBE_FILES = 8  # clips probed for their frame size when the manifest has no width/height columns
REMOTE_SAVE_EVERY_S = 5.0  # a remote output's spend record is rewritten at most this often (and at the end)


class SpendBook:
    """What an output has cost over every run that wrote it: `<output>.spend.json` beside the output.

    Local outputs are rewritten atomically after every request (a killed run loses nothing); remote ones at
    most every REMOTE_SAVE_EVERY_S seconds and when the client closes.
    """

    def __init__(self, output):
        out = as_path(output)
        self.path = out.with_name(out.name.rstrip("/") + ".spend.json")
        self._last = 0.0

    def load(self) -> tuple[float, float]:
        """(USD spent on this output so far, the largest worst case of one request seen); zeros when new."""
        try:
            data = json.loads(self.path.read_bytes() or b"{}")
        except FileNotFoundError:
            return 0.0, 0.0
        except (OSError, ValueError) as exc:
            raise FatalRunError(
                f"cannot read {self.path} ({first_line(exc)}), the record of what this output has cost; fix or "
                "delete it (deleting it forgets what earlier runs spent) and run the same command again."
            ) from None
        return float(data.get("spent_usd") or 0.0), float(data.get("worst_request_usd") or 0.0)

    def save(self, total: float, worst: float, force: bool = False) -> None:
        now = time.monotonic()
        if is_remote(self.path) and not force and now - self._last < REMOTE_SAVE_EVERY_S:
            return
        self._last = now
        data = json.dumps({"spent_usd": round(total, 8), "worst_request_usd": round(worst, 8)}).encode()
        if is_remote(self.path):
            put_bytes(self.path, data)
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.path)


def attach_spend(stage, output) -> SpendGate | None:
    """Give an API caption stage's backend the gate for this output: what the output cost before (from its
    SpendBook) and the --budget ceiling. Called once by the CLI before the run; None for other backends."""
    if not stage.backend.counts_spend:
        return None
    book = SpendBook(output)
    before, worst = book.load()
    gate = SpendGate(stage.options.budget, before=before, worst_seen=worst, saved=book.save)
    stage.backend.set_spend_gate(gate)
    return gate


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


def estimate(stage, rows, count: int | None = None) -> dict:
    """Tokens and cost of captioning `rows` (the selected manifest rows) with this caption stage; count: how
    many rows are selected when `rows` is a sample of them."""
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
    n = len(rows) if count is None else count
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


def describe(est: dict, budget: float | None, before: float = 0.0) -> str:
    """The estimate as the sentences printed before the first request (`before`: what the output already cost)."""
    text = (
        f"vidcap: estimate for {est['rows']} rows: {est['frames']} frames of {est['frame_size']} at detail="
        f"{est['detail']} ({est['image_tokens']} tokens each), {est['prompt_tokens']:,} prompt tokens and about "
        f"{est['completion_tokens']:,} completion tokens (at most {est['completion_tokens_max']:,})"
    )
    if est["cost_usd"] is None:
        return text + "; no price known for this model (give --price-in and --price-out to see a cost)."
    text += f"; about ${est['cost_usd']:.2f} (at most ${est['cost_usd_max']:.2f})."
    if before > 0:
        text += f" This output has already cost ${before:.4f}."
    if budget is not None and before + est["cost_usd"] > budget:
        left = max(0.0, budget - before)
        share = left / est["cost_usd"] if est["cost_usd"] else 1.0
        text += (
            f" The --budget of ${budget:.2f} covers about {share:.0%} of it; no request that could pass it is sent, "
            "and the run stops there (exit 3)."
        )
    return text


def print_estimate(stage, manifest, ropts) -> dict | None:
    """Print the estimate for an API caption run before anything is sent (None for other backends)."""
    if not stage.backend.counts_spend:
        return None
    count, sample = selected_sample(manifest, ropts.shard, ropts.limit)  # streamed: never the whole manifest
    est = estimate(stage, sample, count)
    gate = stage.backend.spend_gate()
    print(describe(est, stage.options.budget, gate.before if gate is not None else 0.0), file=sys.stderr)
    stage.cost_estimate = est  # the summary puts it beside the counted cost
    return est
