"""Any transformers image-text-to-text model (Qwen2-VL / Qwen2.5-VL, LLaVA-OneVision, ...): the chat template
and preprocessing come from the model's own processor; clips go in as native video where it has a video path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UsageError, first_line
from .base import CaptionRequest
from .hf_common import HFCaptionBackend, eos_ids, is_random_skeleton, random_model
from .options import VLMOptions
from .qwen_pixels import QwenGeometry, geometry, resize_frames


class HFVLMBackend(HFCaptionBackend):
    name = "hf-vlm"
    Options = VLMOptions
    options: VLMOptions
    frames_as_images = False  # LLaVA-1.6 has no video path: its subclass sends frames as separate images

    def __init__(self, preset, options):
        super().__init__(preset, options)
        self.processor = None
        self.native_video = False
        self.geometry: QwenGeometry | None = None  # Qwen-style video sizing, done before the processor

    def load_preprocessor(self, path: Path) -> None:
        from transformers import AutoProcessor

        label = self.model_label()
        try:
            self.processor = AutoProcessor.from_pretrained(path, trust_remote_code=self.options.trust_remote_code)
        except (OSError, ValueError, KeyError) as exc:
            raise UsageError(
                f"could not load the processor of '{label}' ({first_line(exc)}); pass a full model directory."
            ) from None
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        if self.tokenizer is None:
            raise UsageError(f"the processor of '{label}' has no tokenizer; pass a full model directory.")
        self.tokenizer.padding_side = "left"  # generation continues from the last position
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.pad_id = self.tokenizer.pad_token_id
        self.native_video = not self.frames_as_images and getattr(self.processor, "video_processor", None) is not None
        self._apply_pixel_budget()
        if self.native_video:
            self.geometry = geometry(
                self.processor.video_processor, self.param("max_pixels"), self.param("total_pixels")
            )

    def _load(self, path: Path, device: str, dtype) -> None:
        from transformers import AutoModelForImageTextToText

        self.load_preprocessor(path)
        trc = self.options.trust_remote_code
        label = self.model_label()
        try:
            if is_random_skeleton(path):
                model = random_model(AutoModelForImageTextToText, path, device, dtype)
            else:
                from ..parallel import tp_load_kwargs

                kwargs = dict(dtype=dtype, attn_implementation="sdpa", use_safetensors=True, trust_remote_code=trc)
                sharded = tp_load_kwargs()  # inside a --tp group: transformers shards the weights itself
                kwargs.update(sharded)
                if str(device).startswith("cuda") and not sharded:
                    kwargs["device_map"] = {"": device}  # straight onto the GPU, no full copy in host memory
                try:
                    model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
                except ValueError as exc:
                    if "sdpa" not in str(exc).lower():
                        raise
                    kwargs["attn_implementation"] = "eager"  # architectures without an SDPA kernel
                    model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
        except (OSError, ValueError, KeyError) as exc:
            hint = "" if trc else "; if it ships its own code, add --trust-remote-code"
            raise UsageError(
                f"could not load '{label}' as an image-text-to-text model ({first_line(exc)}){hint}."
            ) from None
        self.model = model if getattr(model, "_tp_size", None) else model.to(device)
        self.eos = eos_ids(self.tokenizer, self.model.generation_config)

    def _apply_pixel_budget(self) -> None:
        """Qwen-style processors size frames by a pixel count (`size` = min/max pixels, with `merge_size`)."""
        max_pixels = self.param("max_pixels")
        if not max_pixels:
            return
        for proc in (
            getattr(self.processor, "image_processor", None),
            getattr(self.processor, "video_processor", None),
        ):
            size = getattr(proc, "size", None)
            if proc is None or not hasattr(proc, "merge_size") or size is None or "longest_edge" not in size:
                continue
            new = dict(size)
            new["longest_edge"] = int(max_pixels)
            new["shortest_edge"] = min(int(new.get("shortest_edge") or max_pixels), int(max_pixels))
            proc.size = type(size)(**new) if not isinstance(size, dict) else new
            if hasattr(proc, "cap_pixels_per_frame"):
                proc.cap_pixels_per_frame = True

    def provenance(self) -> dict:
        info = super().provenance()
        info["video_input"] = "native" if self.native_video else "frames as images"
        for key in ("max_pixels", "total_pixels"):
            if self.param(key):
                info[key] = int(self.param(key))
        if self.geometry is not None:
            info["frame_resize"] = "decode workers, area interpolation, to the processor's size"
        return info

    def _content(self, req: CaptionRequest):
        """(chat content placeholders, images, videos) for one request."""
        frames = req.frames
        if req.is_image:
            return [{"type": "image"}], [frames[0]], []
        if self.native_video:
            if self.geometry is not None:  # sized here, once, from uint8: the processor only normalises
                frames = resize_frames(frames, self.geometry.size(frames.shape[1], frames.shape[2], len(frames)))
            return [{"type": "video"}], [], [frames]
        return [{"type": "image"} for _ in range(len(frames))], list(frames), []

    def render(self, req: CaptionRequest) -> tuple[str, list, list]:
        content, images, videos = self._content(req)
        messages = [{"role": "user", "content": content + [{"type": "text", "text": req.prompt}]}]
        if getattr(self.processor, "chat_template", None):
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            text = self.fallback_prompt(req.prompt, len(images))
        return text, images, videos

    def fallback_prompt(self, prompt: str, n_images: int) -> str:
        raise UsageError(
            f"model '{self.model_label()}' has no chat template in its processor; use an instruction-tuned (chat) checkpoint."
        )

    def _video_metadata(self, req: CaptionRequest) -> dict | None:
        """Where the sampled frames sit in the clip, for processors that turn it into temporal positions
        (Qwen2.5-VL's `second_per_grid_ts`: without it the processor assumes frames 0.5 s apart; Qwen3-VL's
        `<t seconds>` before each frame pair: without it, 24 fps)."""
        m = req.meta
        if not m.get("fps") or not m.get("indices") or not m.get("total_frames"):
            return None
        return {
            "total_num_frames": int(m["total_frames"]),
            "fps": float(m["fps"]),
            "frames_indices": [int(i) for i in m["indices"]],
        }

    def prepare_one(self, req: CaptionRequest) -> dict:
        text, images, videos = self.render(req)
        kwargs: dict[str, Any] = dict(text=[text], return_tensors="pt")
        if images:
            kwargs["images"] = images
        if videos:
            kwargs["videos"] = videos
            kwargs["do_sample_frames"] = False  # the frames are already the sampled ones
            if self.geometry is not None:
                kwargs["do_resize"] = False  # and already at the processor's size
            meta = self._video_metadata(req)
            if meta is not None:
                kwargs["video_metadata"] = [meta]
        enc = self.processor(**kwargs)
        item = {k: v for k, v in enc.items() if k != "token_type_ids"}
        item["n_prompt"] = int(enc["attention_mask"].sum())
        return item
