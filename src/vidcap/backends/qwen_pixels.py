"""Qwen-VL frame sizes, computed where the frames are decoded: the size Qwen's own video processors would
resize each frame to (a multiple of patch x merge pixels, within the per-frame and per-clip pixel budgets),
so that the decode workers resize the uint8 frames once (OpenCV, area interpolation) and the processor only
rescales, normalises and patchifies (`do_resize=False`). Measured on one core: a clip of 8 720p frames took
59 ms through Qwen2.5-VL's processor and 16 ms once the frames had its size (docs/benchmarks.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# video processors whose size["longest_edge"] is the whole clip's budget (Qwen3-VL), with `max_video_tokens`
# per frame; in the others (Qwen2-VL/2.5-VL) it is per frame
CLIP_BUDGET = {"Qwen3VLVideoProcessor", "Qwen3VLVideoProcessorFast"}


@dataclass(frozen=True)
class QwenGeometry:
    factor: int  # patch_size * merge_size: both sides are multiples of it
    min_pixels: int  # per frame
    max_pixels: int  # per frame
    total_pixels: int | None  # per clip (all frames), None: no clip budget

    def frame_budget(self, n_frames: int) -> int:
        """Pixels one frame may have in a clip of `n_frames` (the per-clip budget shared out, as Qwen3-VL's
        processor caps it; never below 1.05 x the minimum)."""
        if not self.total_pixels:
            return self.max_pixels
        return max(min(self.max_pixels, self.total_pixels // max(1, n_frames)), int(self.min_pixels * 1.05))

    def size(self, height: int, width: int, n_frames: int) -> tuple[int, int]:
        """(height, width) a frame of this clip is resized to (Qwen's smart_resize)."""
        return smart_resize(height, width, self.factor, self.min_pixels, self.frame_budget(n_frames))


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's rule: sides rounded to multiples of `factor`, the area scaled into [min, max] pixels."""
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def geometry(video_processor, max_pixels: int | None, total_pixels: int | None) -> QwenGeometry | None:
    """The budgets of a Qwen-style video processor (patch_size, merge_size, size with shortest/longest edge),
    with the user's --max-pixels / --total-pixels over its own; None for any other processor.
    Qwen2-VL/2.5-VL's `longest_edge` is per frame; Qwen3-VL's is per clip, with `max_video_tokens` per frame."""
    size = getattr(video_processor, "size", None)
    patch, merge = getattr(video_processor, "patch_size", None), getattr(video_processor, "merge_size", None)
    if not (patch and merge and size is not None):
        return None
    get = size.get if isinstance(size, dict) else lambda k: getattr(size, k, None)
    shortest, longest = get("shortest_edge"), get("longest_edge")
    if not (shortest and longest):
        return None
    factor = int(patch) * int(merge)
    if type(video_processor).__name__ in CLIP_BUDGET:
        frame, clip = int(getattr(video_processor, "max_video_tokens", 768)) * factor * factor, int(longest)
    else:
        frame, clip = int(longest), None
    return QwenGeometry(factor, int(shortest), int(max_pixels or frame), int(total_pixels or 0) or clip)


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [K, H, W, 3] -> [K, h, w, 3] (area interpolation: every source pixel counts when shrinking)."""
    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames
    shrink = h * w <= frames.shape[1] * frames.shape[2]
    try:
        import cv2
    except ImportError:  # no OpenCV: torch's antialiased bilinear (slower, same sizes)
        import torch

        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
        y = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", antialias=shrink, align_corners=False)
        return y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in frames])
