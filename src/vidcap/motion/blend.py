"""Is a pair of frames that differ the two ends of a dissolve? The blend test of the one-shot check.

A dissolve is a weighted sum of the shot before and the shot after, so a frame in its middle is fitted
far better by both ends together than by either alone. One shot whose ends differ (a walker filling
and leaving the frame, text entering a dark picture, noise on large flat areas) has frames in between
that either end explains about as well as both. Frames are the 40-px ones of `dense`, moved onto each
other by the chained camera motion.
"""

from __future__ import annotations

import numpy as np

from vidcap.motion.track import _to_pixel

BLEND_RATIO = 0.47  # a frame between two that differ, explained this much better by a blend of both: a dissolve
BLEND_Q = 0.75  # quantile of the residuals the blend test compares (flat areas fit anything)
BLEND_FRAMES = 16  # at most this many frames in between are tried


def warp(small: np.ndarray, matrix: np.ndarray, w: int) -> np.ndarray:
    """`small` moved by `matrix` (centred coordinates at working width `w`); NaN where nothing lands."""
    import cv2

    h_s, w_s = small.shape
    m = matrix.astype(np.float64).copy()
    m[:, 2] *= w_s / w
    return cv2.warpAffine(
        small,
        _to_pixel(m, w_s, h_s),
        (w_s, h_s),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=np.nan,
    )


def pose_at(poses: dict[int, np.ndarray], marks: np.ndarray, k: int) -> np.ndarray:
    """The pose of frame k, interpolated between the chain's frames either side (steps are short)."""
    if k in poses:
        return poses[k]
    after = int(marks[np.searchsorted(marks, k)])
    before = int(marks[np.searchsorted(marks, k) - 1])
    t = (k - before) / (after - before)
    return (1 - t) * poses[before] + t * poses[after]


def residual(y: np.ndarray, columns: list[np.ndarray]) -> float:
    """BLEND_Q quantile of |y - robust linear fit of y on columns (plus a constant)|."""
    a = np.stack([np.ones_like(y), *columns], 1).astype(np.float64)
    y = y.astype(np.float64)
    weight = np.ones_like(y)
    ridge = 1e-6 * np.eye(a.shape[1])
    for _ in range(4):  # iteratively reweighted least squares, close to an L1 fit: movers do not pull it
        aw = a * weight[:, None]  # weight = 1/sqrt(|r|): squared, the weights of an L1 fit
        coef = np.linalg.solve(aw.T @ aw + ridge * float(len(y)), aw.T @ (y * weight))
        r = np.abs(y - a @ coef)
        weight = 1 / np.sqrt(r + 0.05 * float(r.mean()) + 1e-3)
    return float(np.partition(r, int(BLEND_Q * (len(r) - 1)))[int(BLEND_Q * (len(r) - 1))])


def blend_ratio(
    clip, a: int, b: int, poses: dict[int, np.ndarray], frames: int = BLEND_FRAMES, below: float = 0.0
) -> float:
    """How much better the frames between a and b are explained by a mix of both than by the better one.

    A dissolve is a weighted sum of the shot before and the shot after: a frame in its middle is fitted
    far better by both ends together (ratio well below 1). In one shot whose ends differ (a mover,
    noise, a flat picture), a frame in between is about as well explained by either end alone (~1).
    Returns the smallest ratio over the frames tried (at most `frames`, evenly spaced; the first one found
    under `below` ends the search); 1 when none could be compared. `clip`: the
    frames as `dense._Clip` holds them (`gray` [T,h,w] at working size, `small(i)` the 40-px frame i);
    `poses`: 3x3 poses of the chain's frames.
    """
    marks = np.array(sorted(poses))
    w = clip.gray.shape[2]
    inner = np.unique(np.linspace(a + 1, b - 1, min(frames, b - a - 1)).round().astype(int))
    best = 1.0
    for k in inner:
        pose_k = pose_at(poses, marks, int(k))
        xa = warp(clip.small(a), (pose_k @ np.linalg.inv(poses[a]))[:2], w)
        xb = warp(clip.small(b), (pose_k @ np.linalg.inv(poses[b]))[:2], w)
        inside = ~np.isnan(xa) & ~np.isnan(xb)
        if inside.mean() < 0.2:
            continue
        y = clip.small(int(k))[inside]
        alone = min(residual(y, [xa[inside]]), residual(y, [xb[inside]]))
        if alone > 1e-3:
            best = min(best, residual(y, [xa[inside], xb[inside]]) / alone)
            if best < below:
                break
    return best
