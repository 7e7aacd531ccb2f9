"""The motion stage: camera-motion label and numbers per row, all CPU work in the loader processes."""

from __future__ import annotations

import os

from ..motion.result import DEFAULT_THRESHOLD, MotionResult, classify
from .base import Item, Stage

METHOD = "dis-similarity-v5"  # bump when estimates change, so old parts are not mixed in
_threads_set = False


class MotionLoader:
    """Runs in worker processes: decode the clip densely and estimate its motion."""

    def __init__(self, max_frames: int = 64, work_width: int = 160):
        self.max_frames = max_frames
        self.work_width = work_width

    def __call__(self, row: dict) -> tuple[MotionResult, bool]:
        from ..frames.decode import check_path
        from ..frames.images import is_image_file, load_image
        from ..manifest import ABSPATH, read_range
        from ..motion.dense import estimate
        from ..motion.reader import read_gray

        _one_thread()
        path = check_path(row.get(ABSPATH, row.get("path")))
        span = read_range(row)  # a range row: only its start_time/end_time part of the file
        if is_image_file(path):
            load_image(path)  # a broken image is a decode error, not a still
            return MotionResult(confidence=1.0), True
        clip = read_gray(path, max_frames=self.max_frames, width=self.work_width, span=span)
        return estimate(clip.frames, work_width=self.work_width, times=clip.times, fps=clip.fps or None), False


def _one_thread() -> None:
    """OpenCV's own thread pool fights the other worker processes for the same cores."""
    global _threads_set
    if not _threads_set:
        import cv2

        cv2.setNumThreads(1)
        _threads_set = True


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
