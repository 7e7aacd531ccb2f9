"""The motion result and the threshold rules that turn it into a `cmotion` label."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

PAN_LEFT, PAN_RIGHT = "pan_left", "pan_right"
TILT_UP, TILT_DOWN = "tilt_up", "tilt_down"
ZOOM_IN, ZOOM_OUT = "zoom_in", "zoom_out"
STATIC, UNCLASSIFIED = "static", "unclassified"

# The eight base classes; a label is one of these or a `+` join of movers in this order.
CLASSES = (PAN_LEFT, PAN_RIGHT, TILT_UP, TILT_DOWN, ZOOM_IN, ZOOM_OUT, STATIC, UNCLASSIFIED)
_ORDER = {name: i for i, name in enumerate(CLASSES)}

DEFAULT_THRESHOLD = 0.25


@dataclass
class MotionResult:
    """Scene motion between the first and the last frame of a clip.

    dx, dy: displacement of the scene point at the frame centre, as fractions of the frame width and
    height (+dx: scene pixels moved right, +dy: moved down). zoom: scale of the last frame relative to
    the first (>1: pixels spread out). The labels read pan and tilt from `pan(threshold)`: a labelled
    zoom is about the frame point that moves least, which need not be the centre. reason: why the clip
    cannot be classified ("" when it can). note: a remark on a classified clip (`uncertain motion`).
    score: mean displacement per frame as a share of the frame diagonal (`motion_score`).
    """

    dx: float = 0.0
    dy: float = 0.0
    zoom: float = 1.0
    confidence: float = 0.0
    reason: str = ""
    rotation: float = 0.0  # degrees, reported only (no class uses it)
    pairs: int = 0  # frame pairs measured
    points: int = 0  # median tracked points per pair
    inlier_ratio: float = 0.0  # median share of tracked points that follow the camera model
    note: str = ""
    score: float = 0.0

    def pan(self, threshold: float = DEFAULT_THRESHOLD) -> tuple[float, float]:
        """(pan, tilt) the labels use: the centre's displacement, less what a zoom explains.

        A zoom past the threshold is about a centre anywhere in the frame: the frame point that moves
        least (per axis, |dx| - |zoom - 1| / 2 when the zoom's fixed point lies outside the frame, 0 when
        inside). A zoom below the threshold is no zoom, so its clip's pan is the centre's displacement.
        """
        if abs(math.log(max(self.zoom, 1e-6))) <= math.log(zoom_limit(threshold)):
            return self.dx, self.dy
        reach = abs(self.zoom - 1) / 2
        return (
            math.copysign(max(0.0, abs(self.dx) - reach), self.dx),
            math.copysign(max(0.0, abs(self.dy) - reach), self.dy),
        )

    @property
    def ok(self) -> bool:
        return not self.reason

    def as_dict(self) -> dict:
        return asdict(self)


def zoom_limit(threshold: float) -> float:
    """Zoom factor that counts as zoom_in at `threshold` (1/limit counts as zoom_out).

    A pixel at the frame edge (half a frame from the centre) moves by threshold x frame size when the
    scale is 1 + 2*threshold, the same "pixels moved by more than threshold" rule that pan and tilt
    use; zoom_out is the mirror image in log scale, so a clip played backwards gets the opposite label.
    """
    return 1.0 + 2.0 * threshold


def classify(result: MotionResult, threshold: float = DEFAULT_THRESHOLD) -> str:
    """The `cmotion` label: movers joined with `+`, `static`, or `unclassified`."""
    if not result.ok:
        return UNCLASSIFIED
    labels = []
    dx, dy = result.pan(threshold)
    if dx > threshold:
        labels.append(PAN_LEFT)  # scene moved right: the camera turned left
    elif dx < -threshold:
        labels.append(PAN_RIGHT)
    if dy > threshold:
        labels.append(TILT_UP)  # scene moved down: the camera tilted up
    elif dy < -threshold:
        labels.append(TILT_DOWN)
    log_zoom, log_limit = math.log(max(result.zoom, 1e-6)), math.log(zoom_limit(threshold))
    if log_zoom > log_limit:
        labels.append(ZOOM_IN)
    elif log_zoom < -log_limit:
        labels.append(ZOOM_OUT)
    return "+".join(labels) if labels else STATIC


def normalize_label(label: str) -> str:
    """Canonical form of a label (`zoom_in+pan_left` -> `pan_left+zoom_in`); raises ValueError."""
    parts = [p.strip().lower() for p in str(label).split("+") if p.strip()]
    unknown = [p for p in parts if p not in _ORDER]
    if not parts or unknown:
        raise ValueError(f"unknown camera-motion label {label!r}")
    if len(parts) > 1 and ({STATIC, UNCLASSIFIED} & set(parts)):
        raise ValueError(f"{label!r} joins static/unclassified with other labels")
    return "+".join(sorted(set(parts), key=_ORDER.__getitem__))
