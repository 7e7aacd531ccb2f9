"""PLLaVA's pixel values as the seed's captioner made them, whatever transformers is installed.

The chain (Open-Sora v1.2 `caption_pllava.py`, PLLaVA's `PllavaProcessor`, transformers 4.40's PIL-backed
`CLIPImageProcessor`), per frame of one clip:
1. short side to 672, long side `int(672 * long / short)`, PIL bilinear (torchvision `Resize(672)` on a
   PIL image; small clips are upscaled too);
2. `resize_crop_longshort`: short side to `s = max(min(short, int(min(640, long) / rate)), 336)` with
   `rate = long / short`, PIL bicubic, then the long side cut to `int(s * rate)` from offset
   `((long' - int(s * rate)) // 2) // 2` (it only bites when float rounding leaves one extra pixel);
3. CLIP: short side to 336 (PIL bicubic), centre crop 336x336 (offsets floored), x / 255 in float64
   then float32, `(x - mean) / std` in float32.

Why our own code: transformers 5.x's `CLIPImageProcessor` is torch-backed and differs from the PIL one by
up to 0.015, and skipping steps 1-2 moved pixel values by up to 0.51 (issue 22): real weights would
caption the same clip differently from the seed.
"""

from __future__ import annotations

import numpy as np

SEED_SHORT = 672  # Open-Sora's caption_pllava.py RESOLUTION
PLLAVA_LONGEST = 640  # PllavaProcessor.resize_crop_longshort's cap on the long side
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _short_to(image, short: int, resample):
    """PIL image with its short side at `short`, the long side int(short * long / short0) (transformers'
    and torchvision's rule for a single int size)."""
    w, h = image.size
    if min(w, h) == short:
        return image
    if w <= h:
        size = (short, int(short * h / w))
    else:
        size = (int(short * w / h), short)
    return image.resize(size, resample)


def seed_pixels(frames: np.ndarray, crop: int = 336, mean=CLIP_MEAN, std=CLIP_STD) -> np.ndarray:
    """[K, H, W, 3] uint8 RGB frames of one clip -> [K, 3, crop, crop] float32 pixel values."""
    from PIL import Image

    images = [
        _short_to(Image.fromarray(np.ascontiguousarray(f)), SEED_SHORT, Image.Resampling.BILINEAR) for f in frames
    ]
    w, h = images[0].size
    rate = max(w, h) / min(w, h)
    short = min(min(w, h), int(min(PLLAVA_LONGEST, max(w, h)) / rate))
    short = max(short, crop)
    keep = int(short * rate)
    out = []
    for image in images:
        image = _short_to(image, short, Image.Resampling.BICUBIC)
        iw, ih = image.size
        start = ((max(iw, ih) - keep) // 2) // 2
        if ih > iw:
            image = image.crop((0, start, iw, start + keep))
        else:
            image = image.crop((start, 0, start + keep, ih))
        out.append(_clip(image, crop, mean, std))
    return np.stack(out)


def _clip(image, crop: int, mean, std) -> np.ndarray:
    from PIL import Image

    image = _short_to(image, crop, Image.Resampling.BICUBIC)
    x = np.asarray(image)
    top, left = (x.shape[0] - crop) // 2, (x.shape[1] - crop) // 2
    x = x[top : top + crop, left : left + crop]
    x = (x.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return x.transpose(2, 0, 1)
