"""A deterministic captioner with no model: for tests, dry runs and timing the pipeline without a GPU."""

from __future__ import annotations

import hashlib
import os
import time

from .base import CaptionBackend, CaptionResult


class FakeBackend(CaptionBackend):
    name = "fake"

    def model_label(self) -> str:
        return "fake"

    def caption(self, requests):
        delay = float(os.environ.get("VIDCAP_FAKE_DELAY", "0") or 0)  # tests: make a run slow enough to kill
        if delay:
            time.sleep(delay)
        out = []
        for req in requests:
            f = req.frames
            digest = hashlib.sha1(f.tobytes()).hexdigest()[:8]
            prompt_id = hashlib.sha1(req.prompt.encode()).hexdigest()[:6]
            text = (f"A {'still image' if req.is_image else 'clip'} seen in {f.shape[0]} frames of "
                    f"{f.shape[2]}x{f.shape[1]}, mean level {f.mean():.1f}, content {digest}, prompt {prompt_id}.")
            out.append(CaptionResult(text=text, prompt_tokens=len(req.prompt.split()),
                                     completion_tokens=len(text.split())))
        return out
