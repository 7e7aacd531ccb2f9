"""Camera motion: estimate a clip's global motion from frames and label it pan/tilt/zoom/static.

from vidcap.motion import estimate, classify
label = classify(estimate(frames), threshold=0.25)   # e.g. "pan_left+zoom_in"
"""

from typing import TYPE_CHECKING

# bound after the submodule loads, so `vidcap.motion.evaluate` is the function whatever was imported first
from vidcap.motion.evaluate import evaluate, run_eval
from vidcap.motion.result import CLASSES, DEFAULT_THRESHOLD, MotionResult, classify, zoom_limit

if TYPE_CHECKING:
    from vidcap.motion.dense import estimate

__all__ = ["CLASSES", "DEFAULT_THRESHOLD", "MotionResult", "classify", "estimate", "evaluate", "run_eval", "zoom_limit"]


def __getattr__(name: str):
    if name == "estimate":  # the estimator (OpenCV) loads on first use: the run's main process never needs it
        from vidcap.motion.dense import estimate

        return estimate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
