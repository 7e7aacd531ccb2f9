"""What API requests cost, and the gate that keeps an output under its `--budget`.

Token rules follow OpenAI's published accounting for image inputs: `detail=low` costs 85 tokens per image;
`high` (and `auto`, counted as high so estimates err high) fits the image in 2048x2048, scales its short side
to 768, and costs 170 per 512-pixel tile plus 85. Text is about 4 characters per token.

The gate is asked before every attempt is sent: it admits the request only when what the output had cost
before this run, plus what this run has spent, plus the worst case of every request in flight, plus this
request's worst case stays within the ceiling. A request's worst case is its prompt (text at 2 characters
a token, images by the rule above, scaled up when a server has counted more than that) plus every completion
token it may write. Only the event-loop thread of one client calls it, so it needs no lock.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import FatalRunError

TEXT_OVERHEAD = 7  # tokens a chat message adds around its content
CHARS_PER_TOKEN = 4.0  # typical English text
WORST_CHARS_PER_TOKEN = 2.0  # few texts tokenize denser than this; the gate's worst case uses it


class BudgetSpent(FatalRunError):
    """--budget reached: the run stops (exit 3) before another request could pass it; finished rows are saved."""

    def __init__(self, budget: float, total: float, this_run: float):
        super().__init__(
            f"the budget of ${budget:.2f} for this output is spent: ${total:.4f} in all (${this_run:.4f} by this "
            f"run); finished rows are saved. Run the same command with a higher --budget to continue."
        )


def image_tokens(width: int, height: int, detail: str) -> int:
    """Prompt tokens one image costs at this detail (OpenAI's tiling rule)."""
    if detail == "low" or width <= 0 or height <= 0:
        return 85
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return 170 * math.ceil(w / 512) * math.ceil(h / 512) + 85


def text_tokens(text: str, chars_per_token: float = CHARS_PER_TOKEN) -> int:
    return math.ceil(len(text or "") / chars_per_token) + TEXT_OVERHEAD


def worst_prompt_tokens(prompt: str, sizes: list[tuple[int, int]], detail: str) -> int:
    """An upper estimate of a request's prompt tokens: its text densely tokenized, its images at `detail`."""
    return text_tokens(prompt, WORST_CHARS_PER_TOKEN) + sum(image_tokens(w, h, detail) for w, h in sizes)


@dataclass
class SpendGate:
    """The `--budget` ceiling of one output, checked before each request is sent (see the module text).

    `ceiling` None only counts. `saved(total, worst)` is called after every settled request so the output's
    records can keep the total; `worst` is the largest worst case seen, so a later run knows at once whether
    one more request fits.
    """

    ceiling: float | None
    before: float = 0.0  # USD the output had cost before this run
    worst_seen: float = 0.0  # USD, the largest worst case of one request (kept across runs)
    saved: Callable[[float, float], None] | None = None
    spent: float = 0.0  # USD this run, from the usage the server reported
    held: float = 0.0  # USD, worst cases of requests in flight
    refused: int = 0  # requests not sent because they could pass the ceiling
    scale: float = 1.0  # how far a server's prompt counts have exceeded our worst-case estimate

    @property
    def total(self) -> float:
        return self.before + self.spent

    def worst_usd(self, prompt_tokens: int, max_tokens: int, price_in: float, price_out: float) -> float:
        return (prompt_tokens * self.scale * price_in + max_tokens * price_out) / 1e6

    def admit(self, worst: float) -> bool:
        """Reserve `worst` USD for a request about to be sent; False (nothing reserved) when it does not fit now."""
        self.worst_seen = max(self.worst_seen, worst)
        if self.ceiling is not None and self.total + self.held + worst > self.ceiling + 1e-12:
            return False
        self.held += worst
        return True

    def refuse(self) -> None:
        """A request will not be sent: it did not fit even with nothing else in flight."""
        self.refused += 1

    def settle(self, worst: float, usd: float, prompt_tokens: int = 0, estimated_prompt: int = 0) -> None:
        """A request admitted with `worst` came back having cost `usd` (0 when it failed)."""
        self.held = max(0.0, self.held - worst)
        self.spent += usd
        if estimated_prompt and prompt_tokens > estimated_prompt * self.scale:
            self.scale = prompt_tokens / estimated_prompt
        if self.saved is not None:
            self.saved(self.total, self.worst_seen)

    def exhausted(self) -> bool:
        """True once a request was refused, or when not even the largest request seen could still go."""
        if self.ceiling is None:
            return False
        return self.refused > 0 or (self.worst_seen > 0 and self.total + self.worst_seen > self.ceiling + 1e-12)


def budget_stop(gate: SpendGate | None, *, at_end: bool = False) -> BudgetSpent | None:
    """The exception that stops the run: before a batch, once the gate refused a request or not one more
    could fit; at the end (`at_end`), only when a request was refused (its row is left to a later run)."""
    if gate is None or gate.ceiling is None or not (gate.refused if at_end else gate.exhausted()):
        return None
    return BudgetSpent(gate.ceiling, gate.total, gate.spent)
