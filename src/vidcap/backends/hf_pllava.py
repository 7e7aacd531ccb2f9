"""PLLaVA (ermu2001/pllava-*), the seed's v1.2 captioner: K frames at 336 px (the seed's resize chain, pllava_pixels),
pooled to T'*H'*W' visual tokens behind one `<image>` token, the seed's conversation template, LoRA merged."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..prompts.caption import PLLAVA_SYSTEM, PLLAVA_USER_QUERY
from .base import CaptionRequest
from .hf_common import HFCaptionBackend, eos_ids
from .options import PLLaVAOptions

DEFAULT_LORA_ALPHA = 4.0  # the seed's --lora_alpha (training used 32; see IMPLEMENTATION-NOTES 3.4)


def conversation(system: str, user_turn: str = PLLAVA_USER_QUERY) -> str:
    """The seed's hard-coded template (caption_pllava.py): roles USER:/ASSISTANT:, one interleaved <image>;
    the user turn is v1.2's "Describe the video in details." unless the prompt (v1.3's) has its own."""
    return f"{system} USER:<image> {user_turn} ASSISTANT:"


def parse_pooling(value) -> tuple[int, int, int]:
    if isinstance(value, str):
        parts = value.replace("x", "-").split("-")
    else:
        parts = list(value)
    try:
        shape = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise UsageError(f"--pooling-shape '{value}' must be three positive integers T-H-W, e.g. 4-12-12.")
    return shape


def seed_clean(text: str) -> str:
    """caption_pllava.py's post-processing: text after the last 'ASSISTANT:', no '</s>', one line."""
    return text.split("ASSISTANT:")[-1].removesuffix("</s>").strip().replace("\n", " ")


class PllavaBackend(HFCaptionBackend):
    name = "hf-pllava"
    Options = PLLaVAOptions
    options: PLLaVAOptions

    def __init__(self, preset, options):
        super().__init__(preset, options)
        self.image_processor = None
        self.num_frames = int(options.num_frames or preset.num_frames)
        self.pooling_shape: tuple[int, int, int] | None = None
        self.lora_alpha = float(self.param("lora_alpha", DEFAULT_LORA_ALPHA))
        self.image_token_id = None
        self.pixel_cfg: dict = {}

    @property
    def visual_tokens(self) -> int:
        assert self.pooling_shape is not None  # load_preprocessor set it
        return math.prod(self.pooling_shape)

    def provenance(self) -> dict:
        info = super().provenance()
        info.update(
            num_frames=self.num_frames,
            lora_alpha=self.lora_alpha,
            pooling_shape="-".join(map(str, self.pooling_shape)) if self.pooling_shape else None,
        )
        return info

    def load_preprocessor(self, path: Path) -> None:
        from transformers import AutoTokenizer, CLIPImageProcessor

        raw = json.loads((path / "config.json").read_text())
        self.pooling_shape = parse_pooling(self.param("pooling_shape") or raw.get("pooling_shape") or (4, 12, 12))
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"
        if (path / "preprocessor_config.json").exists():
            self.image_processor = CLIPImageProcessor.from_pretrained(path)
        else:  # the llava-hf CLIP-L/336 preprocessing PLLaVA was trained with
            self.image_processor = CLIPImageProcessor(
                size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}
            )
        proc = self.image_processor
        crop = getattr(proc, "crop_size", None) or {"height": 336}  # a dict (4.x) or a SizeDict (5.x)
        self.pixel_cfg = {
            "crop": int(crop["height"] or 336),
            "mean": tuple(proc.image_mean),
            "std": tuple(proc.image_std),
        }
        self.image_token_id = int(raw.get("image_token_index", 32000))
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else raw.get("pad_token_id", 0))

    def text_config(self, path: Path):
        from .pllava_model import read_pllava_config

        return read_pllava_config(path)[0].text_config

    def _load(self, path: Path, device: str, dtype) -> None:
        from .hf_common import is_random_skeleton
        from .pllava_model import load_pllava, random_pllava

        self.load_preprocessor(path)
        if is_random_skeleton(path):
            self.model = random_pllava(path, device, dtype, self.pooling_shape, self.num_frames)
        else:
            from ..parallel import tp_rank_size

            self.model, _ = load_pllava(
                path, device, dtype, self.pooling_shape, self.num_frames, self.lora_alpha, tp=tp_rank_size()
            )
        self.eos = eos_ids(self.tokenizer, self.model.generation_config)
        if self.model.generation_config.eos_token_id is None:
            self.model.generation_config.eos_token_id = self.eos

    def _fit_frames(self, req: CaptionRequest) -> np.ndarray:
        """Every video must have exactly num_frames frames (the pooling reshapes per video)."""
        frames = req.frames[:1] if req.is_image else req.frames
        k = len(frames)
        if k == self.num_frames:
            return frames
        if k > self.num_frames:
            raise ValueError(f"got {k} frames for a {self.num_frames}-frame PLLaVA setup")
        # PLLaVA's rule for short inputs (and for images): repeat each frame, then cut to num_frames
        return np.repeat(frames, self.num_frames // k + 1, axis=0)[: self.num_frames]

    def token_ids(self, prompt: str, question: bool = False) -> list[int]:
        """A question prompt (vidcap's own: short, dense) is the user turn after the video, under PLLaVA's own
        system text; the seed's prompts are the system text before it."""
        text = (
            conversation(PLLAVA_SYSTEM, prompt)
            if question
            else conversation(prompt, self.options.user_turn or PLLAVA_USER_QUERY)
        )
        ids = self.tokenizer(text).input_ids
        if ids.count(self.image_token_id) != 1:
            raise UsageError(
                "the PLLaVA tokenizer does not map '<image>' to the config's image_token_index; the checkpoint's tokenizer files do not match its config."
            )
        at = ids.index(self.image_token_id)
        return ids[:at] + [self.image_token_id] * self.visual_tokens + ids[at + 1 :]

    def prepare_one(self, req: CaptionRequest) -> dict:
        import torch

        from .pllava_pixels import seed_pixels

        ids = self.token_ids(req.prompt, bool(req.meta.get("question")))
        pixels = torch.from_numpy(seed_pixels(self._fit_frames(req), **self.pixel_cfg))
        return {
            "input_ids": torch.tensor([ids]),
            "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
            "pixel_values": pixels,
            "n_prompt": len(ids),
        }

    def postprocess(self, text: str) -> str:
        return seed_clean(text)
