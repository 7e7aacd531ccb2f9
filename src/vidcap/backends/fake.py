"""A deterministic captioner with no model: for tests, dry runs and timing the pipeline without a GPU.

Failure modes on purpose, chosen by the clip's file name (so they are the same in every process): a name
holding `fault-loop` gives a caption that repeats itself, `fault-empty` no text, `fault-echo` the prompt
back, `fault-trunc` a caption cut off by the token limit. Like a real model, each goes away under the
decoding `--heal` picks for it (a repetition penalty ends the loop, sampling ends the empty answer, any
adjusted decoding ends the echo, a longer limit lets the cut caption finish); with `-stuck` after the
kind (`fault-loop-stuck`) nothing helps.
"""

from __future__ import annotations

import hashlib
import os
import re
import time

from ..knobs import knob
from .base import CaptionBackend, CaptionResult

_FAULT = re.compile(r"fault-(loop|empty|echo|trunc)(-stuck)?")


class FakeBackend(CaptionBackend):
    name = "fake"

    def model_label(self) -> str:
        return "fake"

    def caption(self, requests):
        return self.heal_caption(requests, None)

    def heal_caption(self, requests, decoding):
        delay = float(knob("VIDCAP_FAKE_DELAY"))  # tests: make a run slow enough to kill
        if delay:
            time.sleep(delay)
        out = []
        for req in requests:
            f = req.frames
            digest = hashlib.sha1(f.tobytes()).hexdigest()[:8]
            prompt_id = hashlib.sha1(req.prompt.encode()).hexdigest()[:6]
            text = (
                f"A {'still image' if req.is_image else 'clip'} seen in {f.shape[0]} frames of "
                f"{f.shape[2]}x{f.shape[1]}, mean level {f.mean():.1f}, content {digest}, prompt {prompt_id}."
            )
            text, finish = _fault(os.path.basename(str(req.meta.get("path") or "")), text, req.prompt, decoding)
            out.append(
                CaptionResult(
                    text=text,
                    prompt_tokens=len(req.prompt.split()),
                    completion_tokens=len(text.split()),
                    finish_reason=finish,
                )
            )
        return out


def _fault(name: str, text: str, prompt: str, decoding) -> tuple[str, str]:
    """(caption, finish_reason) for a clip named to fail on purpose under this decoding (None: the run's)."""
    m = _FAULT.search(name)
    if m is None:
        return text, "stop"
    kind, stuck = m.group(1), bool(m.group(2))
    cured = (
        decoding is not None
        and not stuck
        and {
            "loop": bool(
                decoding.repetition_penalty and decoding.repetition_penalty > 1 or decoding.no_repeat_ngram_size
            ),
            "empty": decoding.samples,
            "echo": True,
            "trunc": bool(decoding.max_new_tokens) or decoding.samples,
        }[kind]
    )
    if cured:
        return text, "stop"
    if kind == "loop":
        return "A person walks along the road and " + "the car drives past the house and " * 12, "length"
    if kind == "empty":
        return "", "stop"
    if kind == "echo":
        return prompt, "stop"
    words = text.split()
    return " ".join(words[: max(3, len(words) - 4)]) + " of the", "length"
