"""One step of the dense estimator: DIS optical flow between two frames and a robust similarity fit.

Flow vectors on a grid, kept where the frame has structure (flat areas get zero flow from DIS whatever
the camera does), sharpened by Lucas-Kanade, then fitted by a RANSAC similarity (scale, rotation,
translation about the frame centre) that ignores foreground movers.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from vidcap.motion.track import _to_pixel

GRID = 4  # flow vectors sampled every GRID working pixels
BORDER = 0.10  # share of each side left out of the fit (flow is unreliable there) ...
NARROW_BORDER = 0.04  # ... or this, when fewer than MIN_POINTS grid points inside have structure
REFINE = 1
DIS_FINEST = 1  # DIS works down to 1/2**DIS_FINEST of the working size
MIN_ENERGY = 30.0  # squared Sobel gradient (5x5 mean) below which a pixel is flat or noise
REL_ENERGY = 0.05  # ... or below this share of the frame's 95th percentile
MIN_POINTS = 24  # the fit uses at least this many of the most structured grid points
RANSAC_PX = 1.0  # inlier distance of the similarity fit, working pixels
LINE_PX = 0.5  # inliers spread less than this across their main direction lie on one line (see _across_line)
COURSE_SHARE = 0.25  # the camera's course keeps a step when at least this share of points follow it ...
COURSE_OF_BEST = 0.5  # ... and at least this share of as many as follow the best fit (a mover took the majority)
STRONG_SHARE = 0.02  # `strong`: grid points (narrow border) with at least this share of the frame's strongest structure


def quantile(values: np.ndarray, q: float) -> float:
    """`float(np.quantile(values, q))`, the same bits (numpy's linear interpolation, written as it does), by a
    partial sort: np.quantile's own overhead was most of the cost of the one-shot `mismatch` (~35 calls a clip)
    and of each step's structure floor."""
    n = len(values)
    if n == 0:
        return float(np.quantile(values, q))
    virtual = q * (n - 1)
    lo = math.floor(virtual)
    hi = min(lo + 1, n - 1)
    part = np.partition(values, [lo, hi] if hi != lo else lo)
    a, b = part[lo], part[hi]
    t = virtual - lo
    return float(b - (b - a) * (1 - t)) if t >= 0.5 else float(a + (b - a) * t)


def new_dis():
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    dis.setFinestScale(int(DIS_FINEST))
    return dis


@functools.lru_cache(maxsize=64)
def _grid(h: int, w: int, border: float) -> tuple[slice, slice, np.ndarray]:
    """(row slice, column slice, [n,2] float32 x,y) of the grid points inside `border` (a share of each side)
    of an h x w frame: every step of a clip samples the same grid."""
    bx, by = max(1, int(border * w)), max(1, int(border * h))
    rows, cols = slice(by, h - by, GRID), slice(bx, w - bx, GRID)
    ys, xs = np.mgrid[rows, cols]
    points = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
    points.flags.writeable = False  # shared by every call: `points[keep]` copies
    return rows, cols, points


def _flow_of(matrix: np.ndarray, w: int, h: int) -> np.ndarray:
    """The flow field [h,w,2] a similarity (centred coordinates) makes."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    full = _to_pixel(matrix, w, h).astype(np.float32)
    fx = full[0, 0] * xs + full[0, 1] * ys + full[0, 2] - xs
    fy = full[1, 0] * xs + full[1, 1] * ys + full[1, 2] - ys
    return np.ascontiguousarray(np.stack([fx, fy], axis=-1))


def fit_step(
    dis,
    a: np.ndarray,
    b: np.ndarray,
    guess: np.ndarray | None = None,
    course: np.ndarray | None = None,
    strong: list | None = None,
) -> tuple[np.ndarray | None, float, int]:
    """(similarity a->b in centred coordinates, inlier share, points) from the dense flow a->b.

    `guess`: a similarity to start DIS from (the motion so far, for steps too fast to find alone).
    `course`: the camera's motion predicted from the steps so far; see `_on_course`.
    `strong`: when a list, (flow, structure) of this step is appended to it, for `strong_fit` when needed.
    """
    import cv2

    h, w = a.shape
    flow = dis.calc(a, b, None if guess is None else _flow_of(guess, w, h))
    # weight by structure: flow in flat areas is interpolated from its edges, keep the better half
    gx = cv2.Sobel(a, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(a, cv2.CV_32F, 0, 1, ksize=3)
    structure = cv2.blur(gx * gx + gy * gy, (5, 5))
    for border in (BORDER, NARROW_BORDER):
        rows, cols, points = _grid(h, w, border)
        energy = structure[rows, cols].ravel()
        # flat areas (a black background) get zero flow from DIS whatever the camera does: fit only
        # where there is structure above noise, relative to the frame's strongest structure
        floor = max(MIN_ENERGY, REL_ENERGY * quantile(energy, 0.95))
        keep = energy >= floor
        if keep.sum() >= MIN_POINTS:
            break  # else a dark window whose only structure lies near its edge: look closer to it
    if keep.sum() < MIN_POINTS:
        keep = energy >= np.sort(energy)[-min(MIN_POINTS, len(energy))]
    if strong is not None:
        strong.append((flow, structure))
    src = points[keep]
    dst = src + flow[rows, cols].reshape(-1, 2)[keep]
    if len(src) < 6:
        return None, 0.0, len(src)
    if REFINE:
        # DIS flow is patch-averaged; Lucas-Kanade from it sharpens each point to sub-pixel
        moved, status, _ = cv2.calcOpticalFlowPyrLK(
            a,
            b,
            src.reshape(-1, 1, 2),
            dst.reshape(-1, 1, 2).copy(),
            winSize=(9, 9),
            maxLevel=1,
            criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.03),
            flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
        )
        ok = (status.ravel() == 1) & (np.abs(moved.reshape(-1, 2) - dst).max(1) < 3)
        dst = np.where(ok[:, None], moved.reshape(-1, 2), dst).astype(np.float32)
    c = np.array([w / 2.0, h / 2.0], np.float32)
    matrix, inl = cv2.estimateAffinePartial2D(
        src - c,
        dst - c,
        method=cv2.RANSAC,
        ransacReprojThreshold=RANSAC_PX,
        maxIters=200,
        confidence=0.99,
        refineIters=10,
    )
    if matrix is None:
        return None, 0.0, len(src)
    share = float(inl.mean()) if inl is not None else 0.0
    if inl is not None and inl.sum() >= 3:
        matrix = _across_line(src[inl.ravel() == 1], dst[inl.ravel() == 1], matrix)
    if course is not None:
        kept = _on_course(src - c, dst - c, matrix, share, course)
        if kept is not None:
            return kept[0], kept[1], len(src)
    return matrix, share, len(src)


def strong_fit(flow: np.ndarray, structure: np.ndarray) -> tuple[np.ndarray | None, float]:
    """(shift, share of the points within RANSAC_PX of it): the median flow at the most structured grid
    points only (STRONG_SHARE of the strongest structure, narrow border), for a small bright object (the
    face gif's face entering a dark frame, partly in the border band) against faint texture that DIS
    leaves at no motion, which outvotes it in the fit (`dense._strong`)."""
    h, w = structure.shape
    rows, cols, _ = _grid(h, w, NARROW_BORDER)
    energy = structure[rows, cols].ravel()
    keep = energy >= max(MIN_ENERGY, STRONG_SHARE * float(energy.max()))
    if keep.sum() < 6:
        return None, 0.0
    moves = flow[rows, cols].reshape(-1, 2)[keep]
    shift = np.median(moves, axis=0)
    share = float((np.hypot(*(moves - shift).T) < RANSAC_PX).mean())
    return np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]]), share


def _across_line(src: np.ndarray, dst: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """`matrix`, or only the shift across the line when the points it follows lie on one line (within
    LINE_PX): scale, roll and the shift along the line are not seen there (a still window over the face
    gif's straight panel border read a 0.47 zoom-out), so they are taken as none."""
    d = src - src.mean(0)
    a, b, c = (
        float(x @ y) / max(1, len(d) - 1) for x, y in ((d[:, 0], d[:, 0]), (d[:, 0], d[:, 1]), (d[:, 1], d[:, 1]))
    )
    if (a + c) / 2 - math.hypot((a - c) / 2, b) >= 1.01 * LINE_PX**2:
        return matrix  # the smaller eigenvalue of the points' covariance, in closed form (the common case)
    spread, axes = np.linalg.eigh(np.array([[a, b], [b, c]]))  # the same covariance, for its axes
    if math.sqrt(max(float(spread[0]), 0.0)) >= LINE_PX:
        return matrix
    normal = axes[:, 0]
    across = float(np.median((dst - src) @ normal)) * normal
    return np.array([[1.0, 0.0, across[0]], [0.0, 1.0, across[1]]])


def _on_course(src: np.ndarray, dst: np.ndarray, best: np.ndarray, share: float, course: np.ndarray):
    """(similarity, share) refitted on the points that follow the camera's course, or None.

    Two motions compete when a mover fills most of the frame: RANSAC takes the larger (the mover), while
    the background still follows the course of the steps before. The course wins when its support is
    real (COURSE_SHARE of the points, COURSE_OF_BEST of the best fit's) and the best fit is off it."""
    import cv2

    def residual(m: np.ndarray) -> np.ndarray:
        return np.hypot(*(src @ m[:, :2].T + m[:, 2] - dst).T)

    near = residual(course) < 2 * RANSAC_PX
    if near.mean() < max(COURSE_SHARE, COURSE_OF_BEST * share) or near.sum() < 6:
        return None
    if (residual(best)[near] < 2 * RANSAC_PX).mean() > 0.5:
        return None  # the best fit already follows the course
    matrix, inl = cv2.estimateAffinePartial2D(
        src[near], dst[near], method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX, maxIters=100, refineIters=10
    )
    if matrix is None or inl is None:
        return None
    return matrix, float(inl.sum()) / len(src)
