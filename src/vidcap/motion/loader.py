"""The motion stage's loader: runs in the decode worker processes, decodes a clip and estimates its motion.

Kept apart from `vidcap.stages.motion` (whose `Stage` base reads manifests with pandas) so that a worker
imports only what the estimate needs: numpy, OpenCV, PyAV and this package. The run's main process, which
only pickles the loader, imports none of them: the estimator loads on the first call (in the workers' fork
server, which preloads it).
"""

from __future__ import annotations

from vidcap.motion.result import MotionResult
from vidcap.rowcells import ABSPATH, read_range

_threads_set = False


class MotionLoader:
    """Runs in worker processes: decode the clip densely and estimate its motion."""

    # imported once by the workers' fork server, so each worker starts warm: the estimator and the reader, and
    # the feeder whose worker functions every worker unpickles (none of them imports pandas)
    preload = ("vidcap.motion.loader", "vidcap.motion.dense", "vidcap.motion.reader", "vidcap.feeder")

    def __init__(self, max_frames: int = 64, work_width: int = 160):
        self.max_frames = max_frames
        self.work_width = work_width

    def __call__(self, row: dict) -> tuple[MotionResult, bool]:
        from vidcap.frames.decode import check_path
        from vidcap.frames.images import is_image_file, load_image
        from vidcap.motion.dense import estimate
        from vidcap.motion.reader import read_gray

        _one_thread()
        path = check_path(row.get(ABSPATH, row.get("path")))
        span = read_range(row)  # a range row: only its start_time/end_time part of the file
        if is_image_file(path):
            load_image(path)  # a broken image is a decode error, not a still
            return MotionResult(confidence=1.0), True
        clip = read_gray(path, max_frames=self.max_frames, width=self.work_width, span=span, lazy=True)
        return estimate(clip.frames, work_width=self.work_width, times=clip.times, fps=clip.fps or None), False


def _one_thread() -> None:
    """OpenCV's own thread pool fights the other worker processes for the same cores."""
    global _threads_set
    if not _threads_set:
        import cv2

        cv2.setNumThreads(1)
        _threads_set = True
