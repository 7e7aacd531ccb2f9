"""Whole-frame geometry for the dense estimator: direct (ECC) alignment and the motion score.

The flow fit can fail where the picture is not a cut: a small, soft or blurred frame, a large zoom,
a move fast enough to leave few matching points. Before a pair of frames is called two pictures, the
frames are aligned directly (OpenCV's ECC, intensity-based, whole frame, started from the best motion
at hand); only when no alignment makes them match is there evidence of a cut.
"""

from __future__ import annotations

import itertools
import math

import cv2
import numpy as np

from vidcap.motion.result import MotionResult
from vidcap.motion.track import _to_pixel

ECC_ITERS = 20
ECC_WIDTH = 80  # long one-shot pairs are aligned at this width (the motion is large there, the cost 1/4)
REANCHOR_WIDTH = 160  # a zoom's long spans at this one (at 80 a soft, dark 1.67x zoom read 1.48)
MAX_CHANGE = 0.15
BLOCK_MISMATCH = 0.35  # ECC may move the start by at most this share of the width (or this log-scale)


def _centred(pixel: np.ndarray, w: int, h: int) -> np.ndarray:
    c = np.array([w / 2.0, h / 2.0])
    out = pixel.astype(np.float64).copy()
    out[:, 2] = pixel[:, 2] - c + pixel[:, :2] @ c
    return out


def similarity(matrix: np.ndarray) -> np.ndarray:
    """The closest similarity (scale, rotation, translation) to a 2x3 affine matrix."""
    a = (matrix[0, 0] + matrix[1, 1]) / 2
    b = (matrix[1, 0] - matrix[0, 1]) / 2
    return np.array([[a, -b, matrix[0, 2]], [b, a, matrix[1, 2]]], np.float64)


def _scale(matrix: np.ndarray) -> float:
    return max(1e-6, math.hypot(matrix[0, 0], matrix[1, 0]))


def refine(a: np.ndarray, b: np.ndarray, start: np.ndarray, width: int = 0) -> np.ndarray | None:
    """Similarity a->b (centred coordinates) that ECC reaches from `start`, or None when it does not
    converge or wanders off (more than MAX_CHANGE from the start). `width`: align at this width (cheaper)."""
    h, w = a.shape
    if width and width < w:
        f = width / w
        size = (width, max(8, round(h * f)))
        small = [cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in (a, b)]
        scaled = start.astype(np.float64).copy()
        scaled[:, 2] *= f
        out = refine(small[0], small[1], scaled)
        if out is not None:
            out[:, 2] /= f
        return out
    warp = _to_pixel(start, w, h).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ECC_ITERS, 1e-4)
    try:
        _, warp = cv2.findTransformECC(  # type: ignore[call-overload]  # the stubs forbid the mask None
            a.astype(np.float32), b.astype(np.float32), warp, cv2.MOTION_AFFINE, criteria, None, 5
        )
    except cv2.error:
        return None
    out = similarity(_centred(warp, w, h))
    shift = max(abs(out[0, 2] - start[0, 2]) / w, abs(out[1, 2] - start[1, 2]) / w)
    if shift > MAX_CHANGE or abs(math.log(_scale(out) / _scale(start))) > MAX_CHANGE:
        return None
    return out


def blocks_matching(
    a: np.ndarray, b: np.ndarray, matrix: np.ndarray, grid: tuple[int, int] = (4, 3)
) -> tuple[int, int]:
    """(blocks that match, blocks compared): frame a moved by `matrix` against b, block by block.

    A cut changes every part of the picture; a mover entering (a hand over a third of the frame) leaves
    the rest matching once the camera's motion is undone, however much it shifts the frame's overall
    brightness. Each block with texture on both sides is normalised on its own; it matches when the
    median normalised difference is below BLOCK_MISMATCH."""
    matched, compared = matching_blocks(a, b, matrix, grid)
    return len(matched), compared


def matching_blocks(
    a: np.ndarray, b: np.ndarray, matrix: np.ndarray, grid: tuple[int, int] = (4, 3)
) -> tuple[set[int], int]:
    """(indices of the blocks that match, blocks compared); see `blocks_matching`."""
    h, w = a.shape
    moved = cv2.warpAffine(
        a.astype(np.float32), _to_pixel(matrix, w, h), (w, h), flags=cv2.INTER_LINEAR, borderValue=np.nan
    )
    moved, still = cv2.GaussianBlur(moved, (0, 0), 1.5), cv2.GaussianBlur(b.astype(np.float32), (0, 0), 1.5)
    matched: set[int] = set()
    compared = 0
    for gy in range(grid[1]):
        for gx in range(grid[0]):
            rows = slice(gy * h // grid[1], (gy + 1) * h // grid[1])
            cols = slice(gx * w // grid[0], (gx + 1) * w // grid[0])
            x, y = moved[rows, cols], still[rows, cols]
            inside = ~np.isnan(x)
            if inside.mean() < 0.6:
                continue
            x, y = x[inside], y[inside]
            if x.std() < 3 or y.std() < 3:
                continue
            compared += 1
            diff = np.abs((x - x.mean()) / x.std() - (y - y.mean()) / y.std())
            if float(np.median(diff)) < BLOCK_MISMATCH:
                matched.add(gy * grid[0] + gx)
    return matched, compared


def motion_score(steps, frame_no: np.ndarray, w: int, h: int) -> float:
    """Mean displacement per frame of the picture's points, as a share of the frame diagonal.

    Each step's similarity (`step.matrix`, centred coordinates, frames `step.i` -> `step.j`) moves the
    points of a 5x5 grid over the frame; their mean distance, summed over the steps, is divided by the
    frames the steps span (`frame_no`: each frame's number in the clip)."""
    ys, xs = np.mgrid[-0.4:0.41:0.2, -0.4:0.41:0.2]
    pts = np.stack([xs.ravel() * w, ys.ravel() * h])
    path, first, last = 0.0, None, None
    for step in steps:
        if step.matrix is None:
            continue
        moved = step.matrix[:, :2] @ pts + step.matrix[:, 2:3] - pts
        path += float(np.hypot(moved[0], moved[1]).mean())
        first = step.i if first is None else min(first, step.i)
        last = step.j if last is None else max(last, step.j)
    if first is None or last is None or frame_no[last] <= frame_no[first]:
        return 0.0
    return path / math.hypot(w, h) / float(frame_no[last] - frame_no[first])


def reanchor(gray: np.ndarray, poses: dict[int, np.ndarray], mismatch, pieces: int = 4) -> np.ndarray | None:
    """First-to-last motion (3x3) from a few long spans aligned directly, or None if none improved.

    Short steps under-read a zoom where the picture is soft and the encoder's block pattern stays put
    (a zoom into an upscaled, blurred region: each step's few-percent scale drowns in the still
    pattern). Over a long span the zoom is large and the pattern averages out: each span of the chain
    (`pieces` of them) is re-aligned by ECC from the chained motion and kept where it matches better
    (`mismatch(i, j, matrix)`, lower is better)."""
    marks = sorted(poses)
    cuts = sorted({marks[round(k * (len(marks) - 1) / pieces)] for k in range(pieces + 1)})
    total, better = np.eye(3), False
    for a, b in itertools.pairwise(cuts):
        rel = (poses[b] @ np.linalg.inv(poses[a]))[:2]
        aligned = refine(gray[a], gray[b], rel, width=REANCHOR_WIDTH)
        if aligned is not None:
            new, old = mismatch(a, b, aligned), mismatch(a, b, rel)
            if new is not None and old is not None and new <= old:
                rel, better = aligned, better or new < old
        total = np.vstack([rel, [0.0, 0.0, 1.0]]) @ total
    return total if better else None


def jump(matrix: np.ndarray, expected: np.ndarray, w: int) -> float:
    """How far a step's motion is from the expected one: shift (share of the width) or log-scale."""
    shift = float(np.abs(matrix[:, 2] - expected[:, 2]).max()) / w
    scale = abs(math.log(math.hypot(matrix[0, 0], matrix[1, 0]) / math.hypot(expected[0, 0], expected[1, 0])))
    return max(shift, scale)


def set_motion(result: MotionResult, total: np.ndarray, w: int, h: int) -> None:
    """Put the first-to-last motion `total` (3x3, centred working coordinates) into `result`."""
    a, b = total[0, 0], total[1, 0]
    result.dx, result.dy = float(total[0, 2] / w), float(total[1, 2] / h)
    result.zoom, result.rotation = float(math.hypot(a, b)), float(math.degrees(math.atan2(b, a)))
