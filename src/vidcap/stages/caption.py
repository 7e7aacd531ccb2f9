"""The caption stage: frames from worker processes -> a caption backend -> text and provenance columns."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..backends.base import CaptionOptions, CaptionRequest
from ..backends.registry import Preset, make_backend
from ..errors import UsageError
from ..manifest import ABSPATH
from .base import Item, Stage


@dataclass
class FrameLoader:
    """Runs in decode workers: picks and decodes the frames, resized there so less data crosses processes."""

    num_frames: int
    positions: str
    resize: int | None = None
    max_side: int | None = None

    def __call__(self, row: dict):
        from ..frames import sample_frames

        return sample_frames(row.get(ABSPATH, ""), self.num_frames, self.positions,
                             resize_short=self.resize, max_side=self.max_side)


class CaptionStage(Stage):
    name = "caption"
    suffix = "caption"
    columns = ["text", "num_frames", "fps", "width", "height", "frame_idx", "model", "prompt",
               "prompt_tokens", "completion_tokens", "finish_reason", "flags"]
    dtypes = {c: "Int64" for c in ("num_frames", "width", "height", "prompt_tokens", "completion_tokens")}

    def __init__(self, preset: Preset, options: CaptionOptions):
        from ..prompts.caption import get_prompt

        self.preset = preset
        self.options = options
        self.backend = make_backend(preset, options)
        self.batch_size = max(1, options.batch_size)
        self.num_frames = preset.num_frames if options.num_frames is None else options.num_frames
        if self.num_frames < 1:
            raise UsageError("--num-frames must be at least 1.")
        self.user_prompt = bool(options.prompt or options.prompt_text)
        if options.prompt_text is not None:
            if not options.prompt_text.strip():
                raise UsageError("the --prompt-file is empty; write the prompt text into it.")
            self.prompt = None
        else:
            self.prompt = get_prompt(options.prompt or preset.prompt or "video")
        self.image_prompt = get_prompt("image")
        from ..checks import CaptionChecker

        self.strip_prefix = bool(options.extra.get("strip_prefix"))
        self.checker = CaptionChecker(strip=self.strip_prefix)

    @property
    def prompt_name(self) -> str:
        return "custom" if self.prompt is None else self.prompt.name

    def fingerprint(self) -> dict:
        fp = {"stage": self.name, "model": self.backend.model_label(), "backend": self.preset.backend,
              "prompt": self.prompt_name, "num_frames": self.num_frames}
        if self.strip_prefix:
            fp["strip_prefix"] = True
        return fp

    def provenance(self) -> dict:
        opts = {k: v for k, v in asdict(self.options).items() if k not in ("extra",) and v is not None}
        opts.pop("prompt_text", None)
        opts.pop("base_url", None)  # may hold user:password; the backend's provenance has it cleaned
        return {**self.fingerprint(), **self.backend.provenance(), "options": opts,
                "positions": self.preset.positions, "prompt_text": self._prompt_text(None, False)}

    def loader(self):
        return FrameLoader(self.num_frames, self.preset.positions, self.options.resize)

    def setup(self, device: str | None = None) -> None:
        self.backend.setup(device or self.options.device)

    def teardown(self) -> None:
        self.backend.teardown()

    def _prompt_text(self, row: dict | None, is_image: bool) -> str:
        from ..prompts.caption import render

        if self.prompt is None:
            return self.options.prompt_text
        spec = self.image_prompt if (is_image and not self.user_prompt) else self.prompt
        hint = (row or {}).get("text_input", (row or {}).get("text", ""))
        return render(spec, "" if hint is None or hint != hint else str(hint))

    def process_batch(self, items: list[Item]) -> list[dict]:
        reqs = [CaptionRequest(it.data.frames, self._prompt_text(it.row, it.data.is_image), it.data.is_image,
                               {"path": it.row.get(ABSPATH)}) for it in items]
        results = self.backend.caption(reqs)
        label = self.backend.model_label()
        outs = []
        for it, res in zip(items, results):
            fr = it.data
            text, flags = self.checker.check(res.text, res.finish_reason, res.error)
            out = {"text": text, "num_frames": fr.num_frames, "fps": fr.fps, "width": fr.width,
                   "height": fr.height, "frame_idx": list(fr.indices), "model": label,
                   "prompt": "image" if fr.is_image and not self.user_prompt else self.prompt_name,
                   "prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
                   "finish_reason": res.finish_reason, "flags": flags, "error": res.error}
            outs.append(out)
        return outs

    def finish_results(self, results):
        """Run-level checks on every result row before the merge: the `duplicate` flag, flag counts."""
        from ..checks import add_duplicate_flags, flag_counts

        results = add_duplicate_flags(results)
        return results, {"flags": flag_counts(results)}

    def summary_extra(self) -> dict:
        usage = getattr(self.backend, "usage_summary", None)
        return usage() if usage else {}
