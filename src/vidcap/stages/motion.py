"""The motion stage: camera-motion label and numbers per row, all CPU work in the loader processes."""

from __future__ import annotations

import os

from ..motion.loader import MotionLoader
from ..motion.result import DEFAULT_THRESHOLD, MotionResult, classify
from .base import Item, Stage

METHOD = "dis-similarity-v9"  # bump when estimates change, so old parts are not mixed in


class MotionStage(Stage):
    """`MotionStage(threshold=0.25)`: columns cmotion, motion_dx/dy/zoom/confidence/score, note."""

    name = "motion"
    suffix = "cmotion"
    columns = ["cmotion", "motion_dx", "motion_dy", "motion_zoom", "motion_confidence", "motion_score", "note"]  # noqa: RUF012
    batch_size = 32
    # all the work happens in the loader processes; the main process only passes results on
    default_workers = max(1, os.cpu_count() or 1)

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, max_frames: int = 64, work_width: int = 160):
        from ..errors import UsageError

        if not 0 < float(threshold) < 5:
            raise UsageError(f"--threshold must be a fraction of the frame size above 0 (e.g. 0.25), got {threshold}")
        self.threshold = float(threshold)
        self.max_frames = int(max_frames)
        self.work_width = int(work_width)

    def fingerprint(self) -> dict:
        return {
            "stage": self.name,
            "threshold": self.threshold,
            "method": METHOD,
            "max_frames": self.max_frames,
            "work_width": self.work_width,
        }

    def loader(self) -> MotionLoader:
        return MotionLoader(self.max_frames, self.work_width)

    def process_batch(self, items: list[Item]) -> list[dict]:
        return [self.result_row(*item.data) for item in items]

    def result_row(self, result: MotionResult, is_image: bool = False) -> dict:
        return {
            "cmotion": classify(result, self.threshold),
            "motion_dx": round(result.dx, 4),
            "motion_dy": round(result.dy, 4),
            "motion_zoom": round(result.zoom, 4),
            "motion_confidence": round(result.confidence, 3),
            "motion_score": round(result.score, 5),
            "note": "still image" if is_image else (result.reason or result.note),
        }
