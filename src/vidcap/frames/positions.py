"""Which frames to sample: the index rules of the reference captioners.

`segments` (PLLaVA's get_index): centres of K equal segments, seg = (T-1)/K,
    idx_i = int(seg/2) + round(seg*i); T=100, K=4 -> [12, 37, 62, 86].
`points` (LLaVA / Open-Sora caption_llava): fixed fractions of T, idx = int(p*T) clamped to T-1;
    1: (.5,), 2: (.25, .75), 3: (.1, .5, .9). For K > 3 there is no reference rule: uniform.
`uniform`: np.linspace(0, T-1, K) rounded.

Frames by time (`--fps F --max-frames N`, `time_indices`): as Qwen's processors (qwen-vl-utils) sample,
n = duration x F frames, at least MIN_TIME_FRAMES and at most N and the clip's own count, evenly spaced
over the clip (np.linspace(0, T-1, n) rounded); a clip without a frame rate counts as ASSUMED_FPS.

With fewer frames than asked (T < K, and for `segments` also T == K) the rules repeat indices; we keep
the rules as they are for parity and return the repeats (a 1-frame clip gives K copies of frame 0).
"""

from __future__ import annotations

import numpy as np

from vidcap.errors import UsageError

POSITIONS = ("segments", "points", "uniform")
POINTS = {1: (0.5,), 2: (0.25, 0.75), 3: (0.1, 0.5, 0.9)}


def check_rule(k: int, positions: str = "segments") -> None:
    """UsageError for an unknown rule or K < 1 (the user's mistake, said before any file is read)."""
    if positions not in POSITIONS:
        raise UsageError(f"unknown frame positions {positions!r}; choose one of {', '.join(POSITIONS)}")
    if int(k) < 1:
        raise UsageError(f"the number of frames must be at least 1, got {k}")


def frame_indices(total: int, k: int, positions: str = "segments") -> list[int]:
    """K frame indices (ascending, possibly repeated) into a clip of `total` frames."""
    check_rule(k, positions)
    total, k = int(total), int(k)
    if total < 1:
        raise ValueError(f"a clip needs at least one frame, got total={total}")
    if positions == "segments":
        return segment_indices(total, k)
    if positions == "points" and k in POINTS:
        return [min(int(p * total), total - 1) for p in POINTS[k]]
    return [int(i) for i in np.round(np.linspace(0, total - 1, k))]


MIN_TIME_FRAMES = 4  # Qwen's video processors' min_frames: two temporal patches at least
ASSUMED_FPS = 30.0


def time_frame_count(total: int, clip_fps: float, rate: float, max_frames: int) -> int:
    """How many frames `rate` per second gives a clip of `total` frames at `clip_fps`."""
    if rate <= 0:
        raise UsageError(f"--fps must be above 0, got {rate}")
    if int(max_frames) < 1:
        raise UsageError(f"--max-frames must be at least 1, got {max_frames}")
    seconds = int(total) / (clip_fps if clip_fps and clip_fps > 0 else ASSUMED_FPS)
    n = int(seconds * rate)
    return max(1, min(max(n, MIN_TIME_FRAMES), int(max_frames), max(int(total), MIN_TIME_FRAMES)))


def time_indices(total: int, clip_fps: float, rate: float, max_frames: int) -> list[int]:
    """Frame indices at `rate` frames per second of the clip's time, evenly spread, at most `max_frames`
    (a clip shorter than MIN_TIME_FRAMES frames repeats some, as the other rules do)."""
    if int(total) < 1:
        raise ValueError(f"a clip needs at least one frame, got total={total}")
    n = time_frame_count(total, clip_fps, rate, max_frames)
    return [int(i) for i in np.round(np.linspace(0, int(total) - 1, n))]


def segment_indices(total: int, k: int) -> list[int]:
    seg = (total - 1) / k
    start = int(seg / 2)
    return [min(start + int(np.round(seg * i)), total - 1) for i in range(k)]
