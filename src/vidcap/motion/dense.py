"""Global camera motion from dense optical flow: DIS flow per frame step, a robust similarity fit, chained.

Each step between sampled frames gets a DIS optical flow field (OpenCV); flow vectors on a grid,
weighted towards structured pixels, are fitted with a RANSAC similarity (scale, rotation, translation
about the frame centre) that ignores foreground movers. The step fits are composed into the
first-to-last motion. Dense flow keeps working where corners are scarce (flat animation, a face
filling a small frame, low light): flat regions carry the motion of their edges.

Whether a clip is one shot is decided separately from the fit: frames are compared after motion
compensation (small normalised frames, median difference), across short and longer gaps, so a cut, a
dissolve or a fade through black reads `unclassified`, while a low-texture picture that moves does not.
A pair that differs only moderately is a dissolve only when the frames between are blends of its two
ends (`blend_ratio`): walkers, text entering a dark picture or flat areas make real shots differ too.
A cut needs evidence: neighbouring frames the flow could not join are aligned directly (ECC, `align`)
and are one shot with an uncertain motion when they then match, or when half the picture's blocks
still match (a hand covering the rest). Zooms are re-checked over a few long spans (`reanchor`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from vidcap.motion.align import (
    ECC_WIDTH,
    blocks_matching,
    jump,
    matching_blocks,
    motion_score,
    reanchor,
    refine,
    set_motion,
)
from vidcap.motion.blend import BLEND_RATIO, blend_ratio, warp
from vidcap.motion.flow import fit_step, new_dis, quantile, strong_fit
from vidcap.motion.reader import WorkFrames
from vidcap.motion.result import MotionResult
from vidcap.motion.track import prepare

WORK_WIDTH = 160
MAX_STEPS = 12  # first pass: this many equal steps over the clip
MAX_STEP_SHIFT = 0.12  # a step whose fit moves the frame more than this (share of width) is split
MIN_INLIERS = 0.3  # below this share the step is mostly not one camera motion
PICTURE_STD = 1.5  # std of the 1/4-size frame below which a frame shows no picture (black, flat)
SURE_PICTURE = 3.0  # a frame scaled when read shows a picture when its coarse spread passes this (`_picture`)
SMALL_W = 40  # frames are compared at this width (noise and small movers average out)
MIN_OVERLAP = 0.3  # frames are compared only where the moved frame covers this share
MISMATCH_Q = 0.5  # quantile of the differences that is compared (0.5: robust to movers on half the frame)
MAX_MISMATCH = 0.35  # normalised median difference above which two frames are not one shot
SPAN_SECONDS = 1.5  # frames up to this far apart are compared for the one-shot check
REANCHOR_ZOOM = math.log(1.15)  # a chain that zooms more than this is re-checked over long spans
UNCERTAIN = 0.2  # below this confidence a classified clip's note says "uncertain motion"
MAX_JUMP = 0.08  # a directly aligned step may differ from the camera's speed so far by this (share, log-scale)
PERSIST_GRID = (8, 6)  # blocks of the persistence test (a mover covering most of the picture)
PERSIST_SHARE = 1 / 6  # ... when this share of the textured blocks (and at least PERSIST_MIN) still match
PERSIST_MIN = 4
SURE_MISMATCH = 0.72  # above this two frames are different pictures, whatever lies between them ...
MOVER_BLEND_RATIO = 0.7  # ... unless the chain kept a mover between them: then a dissolve needs this blend ratio
MOVER_END = 0.25  # ... when the mover was kept this close (seconds) to an end of the pair
LOW_PAIR = 0.25  # a pair that differs less than MAX_MISMATCH but more than this is a dissolve all the same ...
LOW_BLEND = 0.4  # ... when the frames between are this clearly blends of its ends (a dissolve of a flat picture)
LOW_FRAMES = 6  # ... tried on this many frames between (a dissolve lasts 0.3 s and more; the test runs on real shots)
PASS_AHEAD = 10  # a mover that passes: frames up to this far after (in kept frames) may match again ...
PASS_BACK = 3  # ... one of the last this many frames the chain visited
SHIFT_PEAK = 0.2  # phase correlation's peak above which its whole-frame shift is a second start for a step ...
SHIFT_GAP = 1.5  # ... whose fit moves less than this (working pixels) while the shift is twice as large ...
SHIFT_POINTS = 96  # ... and rests on fewer structured points than this (faint texture)
STRONG_AGREE = 0.8  # on more points, the shift of the most structured ones (`strong_fit`) when this share agrees on it
BLOCK = 8  # the codecs' transform block, coded pixels
BLOCKY = 10.0  # a clip whose steps across block edges are this many times those inside blocks (`block_ratio`) ...
DEBLOCK = 0.75  # ... is blurred before everything else, sigma this share of a block at the working size
DEFAULT_FPS = 25.0


@dataclass
class Step:
    i: int
    j: int
    matrix: np.ndarray | None = None  # 2x3 similarity in centred working coordinates
    inliers: float = 0.0  # share of fitted grid points that follow the similarity
    points: int = 0
    uncertain: bool = False  # the flow fit failed; the frames were matched by direct alignment


@dataclass
class Diagnostics:
    steps: list[Step] = field(default_factory=list)
    checks: list[tuple[int, int, float]] = field(default_factory=list)  # (i, j, mismatch)
    # pairs that passed MAX_MISMATCH but whose frames in between are no blend of the two: (i, j, mismatch, ratio)
    unblended: list[tuple[int, int, float, float]] = field(default_factory=list)


def has_picture(gray: np.ndarray) -> bool:
    """Not black or blank: structure above sensor noise once the frame is averaged down 4x."""
    import cv2

    h, w = gray.shape
    small = cv2.resize(gray, (max(4, w // 4), max(4, h // 4)), interpolation=cv2.INTER_AREA)
    return float(small.std()) > PICTURE_STD


def _picture(gray, k: int) -> bool:
    """`has_picture(gray[k])`; for frames scaled when first read (`reader.WorkFrames`), without scaling frame
    k when its block averages at coded size already vary more than SURE_PICTURE (twice the floor): those
    blocks are coarser than `has_picture`'s, and coarser averages vary less (on the tuning split's and
    looks 3-5's 190,900 frames where it passed 3, the working-size spread was at least 0.70 of it, 2.68)."""
    coarse = gray.coarse_std(k) if isinstance(gray, WorkFrames) else None
    return (coarse is not None and coarse > SURE_PICTURE) or has_picture(gray[k])


def _small(gray: np.ndarray) -> np.ndarray:
    import cv2

    h, w = gray.shape
    return cv2.resize(gray, (SMALL_W, max(4, round(h * SMALL_W / w))), interpolation=cv2.INTER_AREA).astype(np.float32)


def mismatch(small_a: np.ndarray, small_b: np.ndarray, matrix: np.ndarray, w: int) -> float | None:
    """Median |difference| of frame b and frame a moved by `matrix` (centred working coordinates,
    working width `w`), both shrunk to SMALL_W and normalised to zero mean and unit spread on their
    overlap; None when they hardly overlap. About 1 for unrelated pictures, near 0 for one picture."""
    warped = warp(small_a, matrix, w)
    inside = ~np.isnan(warped)
    if inside.mean() < MIN_OVERLAP:
        return None
    x, y = warped[inside], small_b[inside]
    sx, sy = float(x.std()), float(y.std())
    if sx < 0.5 or sy < 0.5:
        return None  # nothing left to compare (all dark or flat)
    return quantile(np.abs((x - x.mean()) / sx - (y - y.mean()) / sy), MISMATCH_Q)


def _shift(matrix: np.ndarray, w: int, h: int) -> float:
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    return max(abs(matrix[0, 2]) / w, abs(matrix[1, 2]) / h, 0.5 * abs(math.log(max(scale, 1e-6))))


def _h3(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([matrix, [0.0, 0.0, 1.0]])


def block_steps(luma: np.ndarray) -> tuple[float, float]:
    """(steps across the codec's 8-px block edges, steps across the blocks' middles): mean absolute differences
    of neighbouring pixels, both directions, summed; (0, 0) for a frame too small to have a grid."""
    h, w = luma.shape
    nx, ny = (w - 1) // BLOCK, (h - 1) // BLOCK
    if nx < 2 or ny < 2:
        return 0.0, 0.0

    def steps(at: int) -> float:  # only the pixel columns and rows compared are widened
        across = np.abs(luma[:, at::BLOCK][:, :nx].astype(np.int16) - luma[:, at - 1 :: BLOCK][:, :nx]).mean()
        down = np.abs(luma[at::BLOCK][:ny].astype(np.int16) - luma[at - 1 :: BLOCK][:ny]).mean()
        return float(across + down)

    return steps(BLOCK), steps(BLOCK // 2)


def block_ratio(frames: list[np.ndarray]) -> float:
    """How much larger the steps between neighbouring pixels are across the codec's 8-px block edges than across
    the blocks' middles, pooled over `frames` (luma at coded size): about 1 for a picture, far more for one coded
    as flat blocks (a dark clip at a coarse MPEG-4 quantiser); 1 when nothing has a grid."""
    edges, middles = (sum(parts) for parts in zip(*(block_steps(f) for f in frames), strict=True))
    return edges / max(middles, 0.1) if edges > 0 else 1.0


def _deblock(gray) -> float:
    """Sigma (working pixels) of the blur that takes a blocky clip's block pattern away, or 0 (`block_ratio` of
    three frames at coded size below BLOCKY).

    A dark clip coded at a coarse quantiser (MPEG-4 at q 7-11) is a mosaic of flat 8-px blocks: the encoder
    skips most blocks for several frames and then moves the picture in a jump. The block edges stay on the
    coded grid whatever the camera does, so the flow fit follows them and reads no motion, and a jump's
    partly updated frame then reads as a cut (a 0.53 pan read 0.12, pans and diagonals `scene cut`). Blurred
    over about a block, the mosaic is the picture's own shapes again, and those move with the camera."""
    n = len(gray)
    frames, scale = [], 1.0
    for k in sorted({n // 4, n // 2, (3 * n) // 4}):
        if isinstance(gray, WorkFrames):
            luma, scale = gray.coded(k)
        else:
            luma = gray[k]  # an array at the working size: its grid is the coded one only when it was not scaled
        frames.append(luma)
    return DEBLOCK * BLOCK * scale if block_ratio(frames) >= BLOCKY else 0.0


class _Blurred:
    """Frames (an array or `WorkFrames`) blurred, Gaussian of `sigma` working pixels, when first read."""

    def __init__(self, gray, sigma: float):
        self._gray, self._sigma = gray, sigma
        self.shape = gray.shape
        self._done: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._gray)

    def __getitem__(self, k: int) -> np.ndarray:
        import cv2

        k = int(k)
        if k not in self._done:
            self._done[k] = cv2.GaussianBlur(self._gray[k], (0, 0), self._sigma)
        return self._done[k]


class _Clip:
    """Frames of one clip with their band-passed versions, computed when first needed.

    `blur`: sigma (working pixels) of a blur applied to every frame first (`_deblock`), 0 for none."""

    def __init__(self, gray: np.ndarray, blur: float = 0.0):
        # read as an array is (frames by index, `shape`, `len`), as `WorkFrames` is
        self.gray = cast(np.ndarray, _Blurred(gray, blur)) if blur > 0 else gray
        self._small: dict[int, np.ndarray] = {}
        self._half: dict[int, np.ndarray] = {}
        self._window: np.ndarray | None = None
        self.dis = new_dis()

    def small(self, i: int) -> np.ndarray:
        if i not in self._small:
            self._small[i] = _small(self.gray[i])
        return self._small[i]

    def shift(self, i: int, j: int) -> tuple[float, float, float]:
        """(dx, dy, peak): the whole-frame shift i -> j by phase correlation at half the working size
        (working pixels), and its peak (near 1 for one clear shift, near 0 for none)."""
        import cv2

        for k in (i, j):
            if k not in self._half:
                h, w = self.gray[k].shape
                half = cv2.resize(self.gray[k], (w // 2, h // 2), interpolation=cv2.INTER_AREA)
                self._half[k] = half.astype(np.float32)
        if self._window is None:
            self._window = cv2.createHanningWindow(self._half[i].shape[::-1], cv2.CV_32F)
        (x, y), peak = cv2.phaseCorrelate(self._half[i], self._half[j], self._window)
        return 2 * x, 2 * y, peak

    def mismatch(self, i: int, j: int, matrix: np.ndarray) -> float | None:
        """See `mismatch`; None: no say (too little overlap or picture)."""
        return mismatch(self.small(i), self.small(j), matrix, self.gray.shape[2])


def _predict(last: tuple[np.ndarray, int] | None, frames: int) -> np.ndarray | None:
    """The last accepted step's motion stretched to a step of `frames` frames (constant speed)."""
    if last is None:
        return None
    matrix, length = last
    ratio = frames / length
    scale = math.hypot(matrix[0, 0], matrix[1, 0]) ** ratio
    return np.array([[scale, 0.0, matrix[0, 2] * ratio], [0.0, scale, matrix[1, 2] * ratio]])


def _try(
    clip: _Clip,
    i: int,
    j: int,
    guess: np.ndarray | None,
    course: np.ndarray | None = None,
    strong: list | None = None,
) -> tuple[Step, float | None, bool]:
    """(step, mismatch, accepted) for frames i -> j; `course`: the motion the steps so far predict."""
    h, w = clip.gray.shape[1:]
    matrix, inliers, points = fit_step(clip.dis, clip.gray[i], clip.gray[j], guess, course, strong)
    step = Step(i, j, matrix, inliers, points)
    if matrix is None:
        return step, MAX_MISMATCH * 2, False
    value = clip.mismatch(i, j, matrix)
    same = value is None or value <= MAX_MISMATCH
    # between neighbouring frames a fit that explains the picture stands even when few points agree
    # with it (noisy, blurred or busy footage); longer steps that disagree are split first
    adjacent = j - i == 1
    agreed = inliers >= MIN_INLIERS or (adjacent and value is not None and value <= MAX_MISMATCH / 2)
    ok = same and agreed and (adjacent or _shift(matrix, w, h) <= MAX_STEP_SHIFT)
    return step, value, ok


def _first_try(clip: _Clip, i: int, j: int, course: np.ndarray | None) -> tuple[Step, float | None, bool]:
    """`_try` from no motion; when its fit, on few structured points, stays at (almost) no motion while
    phase correlation of the whole frame clearly reads a shift, `_try` again from that shift, kept when
    accepted with a lower mismatch.

    DIS starts at its coarsest level from zero motion; faint, dark texture (a dark panel, the noise of a
    dark frame) vanishes there, and its points then follow zero while a bright object shows the real
    shift (the flat face gif: half a diagonal lost). Phase correlation of the whole frame still sees it."""
    strong: list = []
    step, value, ok = _try(clip, i, j, None, course, strong)
    m = step.matrix
    moved = m is not None and (
        math.hypot(m[0, 2], m[1, 2]) >= SHIFT_GAP or abs(math.hypot(m[0, 0], m[1, 0]) - 1) > 0.01
    )
    if moved:
        return step, value, ok
    if step.points >= SHIFT_POINTS:
        return _strong(clip, step, value, ok, strong_fit(*strong[0]))
    dx, dy, peak = clip.shift(i, j)
    if peak < SHIFT_PEAK or math.hypot(dx, dy) < 2 * SHIFT_GAP:
        return step, value, ok
    alt = _try(clip, i, j, np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]]), course)
    if alt[2] and (not ok or (alt[1] if alt[1] is not None else 1.0) < (value if value is not None else 1.0)):
        return alt
    return step, value, ok


def _strong(
    clip: _Clip, step: Step, value: float | None, ok: bool, strong: tuple[np.ndarray | None, float]
) -> tuple[Step, float | None, bool]:
    """`step` (a fit at no motion on many points), or the shift of the frame's most structured points
    (`strong_fit`) when STRONG_AGREE of them agree on a clear shift (2 SHIFT_GAP) that passes `_try`'s tests.

    Faint texture (the face gif's dark panel, a dark frame's noise) can outvote a small bright object that
    shows the move: in a tilt whose face enters a black frame from the top, its points read no motion
    with every start DIS was given, and the move was lost (look 7: three 0.31 tilts read `static`)."""
    shift, agree = strong
    if shift is None or agree < STRONG_AGREE or math.hypot(shift[0, 2], shift[1, 2]) < 2 * SHIFT_GAP:
        return step, value, ok
    h, w = clip.gray.shape[1:]
    i, j = step.i, step.j
    moved = clip.mismatch(i, j, shift)
    if (moved is not None and moved > MAX_MISMATCH) or (j - i > 1 and _shift(shift, w, h) > MAX_STEP_SHIFT):
        return step, value, ok
    return Step(i, j, shift, agree, step.points), moved, True


def _chain(clip: _Clip, marks: list[int], diag: Diagnostics) -> str:
    """Fit every step between `marks`, splitting steps that fail; '' or the reason the chain broke."""
    stack = [(marks[k], marks[k + 1]) for k in range(len(marks) - 1)][::-1]
    last: tuple[np.ndarray, int] | None = None
    while stack:
        i, j = stack.pop()
        course = _predict(last, j - i)
        step, value, ok = _first_try(clip, i, j, course)
        if not ok and last is not None:  # a fast move: start DIS from the speed so far
            retry = _try(clip, i, j, course, course)
            if retry[2] or (retry[1] or 0) < (value or 0):
                step, value, ok = retry
        if ok:
            diag.steps.append(step)
            if value is not None:
                diag.checks.append((i, j, value))
            last = (step.matrix, j - i) if step.matrix is not None else last
            continue
        if j - i > 1:  # too fast or unclear for one step: split it
            mid = (i + j) // 2
            stack.extend([(mid, j), (i, mid)])
            continue
        rescued = _rescue(clip, i, j, [step.matrix, _predict(last, 1)]) or _mover(clip, i, j, last)
        if rescued is not None:  # no evidence of a cut: the frames match once aligned directly
            diag.steps.append(rescued)
            last = (rescued.matrix, 1) if rescued.matrix is not None else last
            continue
        bridge = _passed(clip, i, diag)
        if bridge is not None:  # a mover passed: the picture comes back along the camera's course
            diag.steps.append(bridge)
            last = (bridge.matrix, bridge.j - bridge.i) if bridge.matrix is not None else last
            stack = [(max(a, bridge.j), b) for a, b in stack if b > bridge.j]
            continue
        diag.steps.append(step)
        return "scene cut"
    return ""


def _passed(clip: _Clip, i: int, diag: Diagnostics) -> Step | None:
    """Neighbouring frames i, i+1 that nothing joined, bridged when a later frame k (up to PASS_AHEAD
    frames on) matches frame i, or one of the PASS_BACK frames the chain visited before it, again once
    aligned directly along the camera's course (`_rescue`): a mover that crossed the frame (a hand
    sweeping through tree's shot) and left. A cut does not come back to the picture before it. Only
    the later frame that matches best on the course (mismatch at most MAX_MISMATCH) is aligned, so a
    cut costs a few small-frame comparisons. The steps from that earlier frame are replaced by the
    uncertain bridge to k (the frames between are skipped); None when no frame comes back."""
    visited = [s for s in diag.steps if s.matrix is not None]
    for back in range(min(PASS_BACK, len(visited)) + 1):
        before = visited[: len(visited) - back]
        start = visited[-back].i if back else i
        prev = before[-1] if before else None
        last = (prev.matrix, prev.j - prev.i) if prev is not None and prev.matrix is not None else None
        ahead = range(i + 2, min(len(clip.gray), start + 1 + PASS_AHEAD))
        near = [(clip.mismatch(start, k, _course(last, k - start)), k) for k in ahead]
        near = [(value, k) for value, k in near if value is not None and value <= MAX_MISMATCH]
        if not near:
            continue  # nothing comes back along the course (a cut): no direct alignment tried
        k = min(near)[1]
        bridge = _rescue(clip, start, k, [None, _predict(last, k - start)])
        if bridge is not None:
            if back:
                gone = {(s.i, s.j) for s in diag.steps[-back:]}
                del diag.steps[-back:]
                diag.checks[:] = [c for c in diag.checks if (c[0], c[1]) not in gone]
            return bridge
    return None


def _course(last: tuple[np.ndarray, int] | None, frames: int) -> np.ndarray:
    predicted = _predict(last, frames)
    return np.eye(3)[:2] if predicted is None else predicted


def _rescue(clip: _Clip, i: int, j: int, starts: list[np.ndarray | None]) -> Step | None:
    """Neighbouring frames the flow fit could not join: aligned directly (ECC) from the best start.

    `starts`: the flow fit and the motion predicted from the speed so far. A step whose frames then
    clearly match (mismatch at most MAX_MISMATCH / 2, or half the picture's blocks match: a mover)
    with a motion close to the prediction is one shot with an uncertain motion; None when no alignment explains the change (a cut), when the
    change is a jump off the camera's course (a cut to a similar picture), or nothing compares."""
    best: tuple[float, np.ndarray] | None = None
    for start in [*starts, np.eye(3)[:2]]:
        if start is None:
            continue
        value = clip.mismatch(i, j, start)
        if value is not None and (best is None or value < best[0]):
            best = (value, start)
    if best is None:
        return None
    aligned = refine(clip.gray[i], clip.gray[j], best[1])
    if aligned is not None:
        value = clip.mismatch(i, j, aligned)
        if value is not None and value < best[0]:
            best = (value, aligned)
    expected = starts[1] if starts[1] is not None else np.eye(3)[:2]
    matched, compared = blocks_matching(clip.gray[i], clip.gray[j], best[1])
    mover = compared >= 4 and matched >= compared / 2  # half the picture still matches: a mover, not a cut
    if (best[0] > MAX_MISMATCH / 2 and not mover) or jump(best[1], expected, clip.gray.shape[2]) > MAX_JUMP:
        return None  # still different, or only a jump the camera was not making: a cut to a similar picture
    return Step(i, j, best[1], 0.0, 0, uncertain=True)


def _persists(clip: _Clip, i: int, j: int, matrix: np.ndarray) -> bool:
    """Part of the picture's texture persists from frame i to j under `matrix` (the camera's course):
    at least PERSIST_MIN and PERSIST_SHARE of the textured blocks (PERSIST_GRID) match. A mover filling
    most of the frame (a hand entering a small window, a face filling a 160x120 frame) leaves some
    background in place along the course; a cut leaves at most a few blocks matching by chance
    (tuning sets and look 1, 74 cuts: at most 3 of 28 or 6 of 45; the movers 4 of 22 and up)."""
    matched, compared = matching_blocks(clip.gray[i], clip.gray[j], matrix, PERSIST_GRID)
    return len(matched) >= PERSIST_MIN and len(matched) >= PERSIST_SHARE * compared


def _mover(clip: _Clip, i: int, j: int, last: tuple[np.ndarray, int] | None) -> Step | None:
    """Neighbouring frames that no alignment matches, kept as one shot (motion uncertain, on the course
    so far) when part of the picture persists along the camera's course (`_persists`)."""
    course = _predict(last, 1)
    course = np.eye(3)[:2] if course is None else course
    return Step(i, j, course, 0.0, 0, uncertain=True) if _persists(clip, i, j, course) else None


def _poses(diag: Diagnostics) -> dict[int, np.ndarray]:
    """Pose (3x3, relative to the first frame) of every frame the chain visited."""
    poses = {diag.steps[0].i: np.eye(3)}
    for step in diag.steps:
        if step.matrix is not None:  # accepted steps always have one
            poses[step.j] = _h3(step.matrix) @ poses[step.i]
    return poses


def _mover_at_end(diag: Diagnostics, a: int, b: int, times: np.ndarray) -> bool:
    """The chain kept a mover as one shot (an uncertain step) between frames a and b, at most MOVER_END
    seconds after a or before b: the mover covers an end of the pair."""
    return any(
        s.uncertain and a <= s.i and s.j <= b and min(times[s.i] - times[a], times[b] - times[s.j]) <= MOVER_END
        for s in diag.steps
    )


def _one_shot(clip: _Clip, times: np.ndarray, diag: Diagnostics) -> bool:
    """Frames up to SPAN_SECONDS apart still show the same picture once the motion is undone
    (a dissolve passes every short step but not a comparison across it). Two frames that differ
    only moderately are a dissolve only when the frames between them are blends of the two."""
    poses = _poses(diag)
    steps = {(s.i, s.j) for s in diag.steps}
    marks = np.array(sorted(poses))
    for ia in marks:
        within = marks[(marks > ia) & (times[marks] - times[ia] <= SPAN_SECONDS)]
        half = within[times[within] - times[ia] <= SPAN_SECONDS / 2]
        for ib in sorted({int(within[-1]) if len(within) else ia, int(half[-1]) if len(half) else ia} - {int(ia)}):
            if ib - ia == 1 and (int(ia), ib) in steps:
                continue  # neighbouring frames: the chain has judged them (and may have kept a mover)
            rel = poses[ib] @ np.linalg.inv(poses[ia])
            value = clip.mismatch(int(ia), ib, rel[:2])
            if value is None:
                continue
            if value > MAX_MISMATCH:  # the chained motion may have drifted: align the pair directly
                aligned = refine(clip.gray[ia], clip.gray[ib], rel[:2], width=ECC_WIDTH)
                again = None if aligned is None else clip.mismatch(int(ia), ib, aligned)
                value = min(value, again if again is not None else value)
            # past SURE_MISMATCH two frames are different pictures, unless part of the picture persists
            # along the camera's course (a mover filling most of it): then the blend test decides
            sure = value > SURE_MISMATCH and not _persists(clip, int(ia), ib, rel[:2])
            if value > MAX_MISMATCH and ib - ia > 1 and (not sure or _mover_at_end(diag, int(ia), ib, times)):
                ratio = blend_ratio(clip, int(ia), ib, poses)
                if ratio > (MOVER_BLEND_RATIO if sure else BLEND_RATIO):
                    diag.unblended.append((int(ia), ib, value, ratio))
                    continue
            diag.checks.append((int(ia), ib, value))
            if value > MAX_MISMATCH:
                return False
            # a dissolve out of or into a flat picture (the face gifs) may never pass MAX_MISMATCH: the frames
            # between are still clear blends of the ends, which one shot's frames are not
            low = value > LOW_PAIR and ib - ia > 1
            if low and blend_ratio(clip, int(ia), ib, poses, LOW_FRAMES, LOW_BLEND) < LOW_BLEND:
                return False
    return True


def estimate(
    frames: np.ndarray | WorkFrames,
    max_steps: int | None = None,
    work_width: int = WORK_WIDTH,
    times=None,
    diagnostics: Diagnostics | None = None,
    fps: float | None = None,
) -> MotionResult:
    """Camera motion between the first and last of `frames` ([T,H,W,3] RGB or [T,H,W] gray uint8, or
    `reader.WorkFrames`: only the frames the steps read are scaled to the working width).

    `times`: each frame's time in seconds (default: consecutive frames at 25 fps). Pass every frame
    or a dense subsample: steps that fail are split, so fast motion needs frames in between.
    `fps`: the clip's frame rate, for `motion_score`'s "per frame" (default: 1 / the times' smallest step).
    """
    if isinstance(frames, WorkFrames) and frames.shape[2] <= work_width:
        gray: np.ndarray | WorkFrames = frames  # scaled to the working width as the steps read them
    else:
        gray = prepare(np.asarray(frames), work_width)
    n = len(gray)
    if n < 2:
        return MotionResult(confidence=1.0)
    t = np.asarray(times, float) if times is not None else np.arange(n) / DEFAULT_FPS
    if fps is None:
        fps = 1 / float(np.diff(t).min()) if times is not None and n > 1 and np.diff(t).min() > 0 else DEFAULT_FPS
    diag = diagnostics if diagnostics is not None else Diagnostics()
    picture = [_picture(gray, k) for k in range(n)]
    if not any(picture):
        return MotionResult(reason="no picture")
    first, last = picture.index(True), n - 1 - picture[::-1].index(True)
    if last - first < 0.6 * (n - 1):
        return MotionResult(reason="no picture")
    # frames without picture in the middle (a fade through black, or the camera passing over a black
    # area) are bridged: the frames either side must still show one picture, else it was a fade
    keep = [k for k in range(first, last + 1) if picture[k]]
    gap = len(keep) < last - first + 1
    if len(keep) < 0.6 * n:
        return MotionResult(reason="no picture")
    kept = gray[keep]
    clip = _Clip(kept, _deblock(kept))
    steps = min(max_steps or MAX_STEPS, len(keep) - 1)
    marks = sorted(set(np.linspace(0, len(keep) - 1, steps + 1).round().astype(int)))
    reason = _chain(clip, marks, diag)
    if not reason and not _one_shot(clip, t[keep], diag):
        reason = "dissolve or cut"
    # across a gap the evidence must be strong: dim frames either side of black match loosely
    across = [v for i, j, v in diag.checks if keep[j] - keep[i] != j - i]
    if gap and (reason or max(across, default=MAX_MISMATCH) > MAX_MISMATCH / 2):
        reason = "fade"
    result = _summarise(diag, reason, gray.shape[2], gray.shape[1])
    if not reason and abs(math.log(result.zoom)) > REANCHOR_ZOOM:
        total = reanchor(clip.gray, _poses(diag), clip.mismatch)
        if total is not None:
            set_motion(result, total, gray.shape[2], gray.shape[1])
    result.score = motion_score(diag.steps, t[keep] * fps, gray.shape[2], gray.shape[1])
    return result


def _summarise(diag: Diagnostics, reason: str, w: int, h: int) -> MotionResult:
    total = np.eye(3)
    for step in diag.steps:
        if step.matrix is not None:
            total = _h3(step.matrix) @ total
    inliers = [s.inliers for s in diag.steps]
    worst = max((c[2] for c in diag.checks), default=0.0)
    result = MotionResult(
        reason=reason,
        pairs=len(diag.steps),
        points=int(np.median([s.points for s in diag.steps])) if diag.steps else 0,
        inlier_ratio=float(np.median(inliers)) if inliers else 0.0,
    )
    set_motion(result, total, w, h)
    if not reason:
        result.confidence = float(
            np.clip(1 - worst / MAX_MISMATCH, 0, 1) ** 0.5 * np.clip(result.inlier_ratio / 0.6, 0, 1)
        )
        if diag.unblended:  # frames that differed past the limit, kept as one shot by the blend test
            result.confidence *= 0.5
        if any(s.uncertain for s in diag.steps):
            result.confidence *= 0.3
        if result.confidence < UNCERTAIN:
            result.note = "uncertain motion"
    return result
