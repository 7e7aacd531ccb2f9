"""Global camera motion from frames: KLT tracks per frame pair, a robust similarity fit, chained.

Each pair of consecutive sampled frames gets corner tracks (Lucas-Kanade, forward-backward checked)
and a RANSAC similarity fit (scale, rotation, translation about the frame centre) that ignores
foreground movers; the pair fits are composed into the first-to-last motion. A pair that fails is
split at its middle frame while frames remain in between (fast motion), and one that still fails
between neighbouring frames marks a scene cut.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from vidcap.motion.result import MotionResult

WORK_WIDTH = 160  # frames are downscaled to this width before tracking
MAX_PAIRS = 12  # first pass: this many equal steps over the clip
MIN_POINTS = 12  # fewer tracked corners than this: no usable fit for a pair
MIN_INLIER_RATIO = 0.35  # below this the pair's motion is mostly not one camera motion
MIN_NCC = 0.2  # warped previous frame vs next frame (confidence, cut reason): a cut
# scores near 0, but so can busy movers over a flat background
CUT_TRACKED = 0.15  # share of corners tracked across a cut: almost none
FB_MAX_ERR = 0.75  # forward-backward tracking error allowed, working pixels
RANSAC_PX = 0.75  # inlier distance for the similarity fit, working pixels
MAX_CORNERS = 100
LK_WIN, LK_LEVELS, LK_ITERS = 11, 3, 20  # Lucas-Kanade window, pyramid levels, iterations
MIN_EIG = 1e-5  # corner strength below which a corner is flat or codec noise


@dataclass
class PairFit:
    matrix: np.ndarray | None = None  # 2x3 similarity in centred working coordinates
    corners: int = 0
    tracked: int = 0
    inliers: int = 0
    ncc: float = 0.0

    @property
    def inlier_ratio(self) -> float:
        return self.inliers / self.tracked if self.tracked else 0.0

    @property
    def good(self) -> bool:
        # no correlation gate: over a flat background with busy movers it is near 0 for good fits
        return self.matrix is not None and self.tracked >= MIN_POINTS and self.inlier_ratio >= MIN_INLIER_RATIO


def prepare(frames: np.ndarray, work_width: int = WORK_WIDTH) -> np.ndarray:
    """Gray uint8 frames [T,h,w] at `work_width` (never upscaled) from [T,H,W,3] or [T,H,W]."""
    import cv2

    frames = np.asarray(frames)
    if frames.ndim == 4 and frames.shape[-1] == 1:
        frames = frames[..., 0]
    if frames.ndim not in (3, 4) or frames.shape[0] == 0:
        raise ValueError(f"expected frames [T,H,W] or [T,H,W,3], got shape {frames.shape}")
    if frames.dtype != np.uint8:
        frames = np.clip(frames, 0, 255).astype(np.uint8)
    h, w = frames.shape[1:3]
    scale = min(1.0, work_width / w)
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    out = []
    for frame in frames:
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
        out.append(gray if scale == 1.0 else cv2.resize(gray, size, interpolation=cv2.INTER_AREA))
    return np.stack(out)


def _ncc(a: np.ndarray, b: np.ndarray, matrix: np.ndarray) -> float:
    """Normalised correlation of frame b with frame a warped by the fitted motion, on the overlap."""
    import cv2

    h, w = a.shape
    full = _to_pixel(matrix, w, h)
    warped = cv2.warpAffine(a, full, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    mask = cv2.warpAffine(np.ones_like(a), full, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
    keep = mask.astype(bool)
    if keep.sum() < 0.1 * a.size:
        return 0.0
    x = warped[keep].astype(np.float32)
    y = b[keep].astype(np.float32)
    x -= x.mean()
    y -= y.mean()
    denom = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float((x * y).sum() / denom) if denom > 1e-6 else 0.0


def _to_pixel(matrix: np.ndarray, w: int, h: int) -> np.ndarray:
    """A centred-coordinate 2x3 matrix expressed in pixel coordinates (origin top-left)."""
    c = np.array([w / 2.0, h / 2.0])
    out = matrix.astype(np.float64).copy()
    out[:, 2] = matrix[:, 2] + c - matrix[:, :2] @ c
    return out


def corners(gray: np.ndarray, floor: float = MIN_EIG) -> np.ndarray | None:
    """Up to MAX_CORNERS spread-out corners, none weaker than `floor` (flat areas, codec noise)."""
    import cv2

    eig = cv2.cornerMinEigenVal(gray, 5)
    top = float(eig.max())
    if top < floor:
        return None
    quality = max(0.001, floor / top)
    return cv2.goodFeaturesToTrack(gray, maxCorners=MAX_CORNERS, qualityLevel=quality, minDistance=4, blockSize=5)


def fit_pair(a: np.ndarray, b: np.ndarray) -> PairFit:
    """Track corners from a to b and fit a similarity that explains most of them."""
    import cv2

    fit = PairFit()
    p0 = corners(a)
    if p0 is None:
        return fit
    fit.corners = len(p0)
    lk: dict[str, Any] = {
        "winSize": (LK_WIN, LK_WIN),
        "maxLevel": LK_LEVELS,
        "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, LK_ITERS, 0.03),
    }
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(a, b, p0, None, **lk)
    p0r, st2, _ = cv2.calcOpticalFlowPyrLK(b, a, p1, None, **lk)
    fb = np.linalg.norm((p0 - p0r).reshape(-1, 2), axis=1)
    keep = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb < FB_MAX_ERR)
    fit.tracked = int(keep.sum())
    if fit.tracked < MIN_POINTS:
        return fit
    h, w = a.shape
    c = np.array([w / 2.0, h / 2.0], np.float32)
    src = p0.reshape(-1, 2)[keep] - c
    dst = p1.reshape(-1, 2)[keep] - c
    matrix, inl = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX, maxIters=500, confidence=0.995, refineIters=10
    )
    if matrix is None:
        return fit
    fit.matrix = matrix
    fit.inliers = int(inl.sum()) if inl is not None else 0
    fit.ncc = _ncc(a, b, matrix)
    return fit


def _textured_span(gray: np.ndarray) -> tuple[int, int] | None:
    """First and last frame with enough corners: a fade from or to black is measured from where
    the picture is, as long as that covers most of the clip."""

    def ok(i: int) -> bool:
        found = corners(gray[i])
        return found is not None and len(found) >= MIN_POINTS

    t = len(gray)
    first = next((i for i in range(t) if ok(i)), None)
    if first is None:
        return None
    last = next(i for i in range(t - 1, first - 1, -1) if ok(i))
    return (first, last) if last - first >= 0.6 * (t - 1) else None


def _chain(gray: np.ndarray, max_pairs: int) -> tuple[list[PairFit], str]:
    """Fits for consecutive steps covering the clip, or a reason the chain broke."""
    span = _textured_span(gray)
    if span is None:
        return [], "too few tracked points"
    start, stop = span
    n = min(max_pairs, stop - start)
    marks = sorted(set(np.linspace(start, stop, n + 1).round().astype(int)))
    fits: list[PairFit] = []
    stack = [(marks[i], marks[i + 1]) for i in range(len(marks) - 1)][::-1]
    while stack:
        i, j = stack.pop()
        fit = fit_pair(gray[i], gray[j])
        if fit.good:
            fits.append(fit)
            continue
        if j - i > 1:  # maybe too fast for one step: split it
            mid = (i + j) // 2
            stack.extend([(mid, j), (i, mid)])
            continue
        fits.append(fit)
        return fits, _failure_reason(fit)
    return fits, ""


def _failure_reason(fit: PairFit) -> str:
    if fit.corners < MIN_POINTS:
        return "too few tracked points"
    if fit.tracked < CUT_TRACKED * fit.corners or (fit.matrix is not None and fit.ncc < MIN_NCC):
        return "scene cut"
    if fit.tracked < MIN_POINTS:
        return "too few tracked points"
    return "mostly foreground motion"


def estimate(frames: np.ndarray, max_pairs: int = MAX_PAIRS, work_width: int = WORK_WIDTH) -> MotionResult:
    """Camera motion between the first and last of `frames` ([T,H,W,3] RGB or [T,H,W] gray uint8).

    Pass every frame (or a dense subsample) when you can: steps that fail are split, so fast motion
    needs frames in between.
    """
    gray = prepare(frames, work_width)
    if len(gray) < 2:
        return MotionResult(confidence=1.0)
    fits, reason = _chain(gray, max_pairs)
    return _summarise(fits, reason, gray.shape[2], gray.shape[1])


def _summarise(fits: list[PairFit], reason: str, w: int, h: int) -> MotionResult:
    total = np.eye(3)
    for fit in fits:
        if fit.matrix is not None and fit.good:
            total = np.vstack([fit.matrix, [0, 0, 1]]) @ total
    a, b = total[0, 0], total[1, 0]
    ratios = [f.inlier_ratio for f in fits]
    result = MotionResult(
        dx=float(total[0, 2] / w),
        dy=float(total[1, 2] / h),
        zoom=float(math.hypot(a, b)),
        rotation=float(math.degrees(math.atan2(b, a))),
        reason=reason,
        pairs=len(fits),
        points=int(np.median([f.tracked for f in fits])) if fits else 0,
        inlier_ratio=float(np.median(ratios)) if ratios else 0.0,
    )
    if not reason:
        ncc = float(np.median([f.ncc for f in fits]))
        result.confidence = float(
            np.clip(result.inlier_ratio, 0, 1)
            * np.clip((ncc - MIN_NCC) / (0.8 - MIN_NCC), 0, 1) ** 0.5
            * min(1.0, result.points / 40)
        )
    return result
