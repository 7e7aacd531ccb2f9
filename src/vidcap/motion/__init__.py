"""Camera motion: estimate a clip's global motion from frames and label it pan/tilt/zoom/static.

from vidcap.motion import estimate, classify
label = classify(estimate(frames), threshold=0.25)   # e.g. "pan_left+zoom_in"
"""

from vidcap.motion.dense import estimate

# bound after the submodule loads, so `vidcap.motion.evaluate` is the function whatever was imported first
from vidcap.motion.evaluate import evaluate, run_eval
from vidcap.motion.result import CLASSES, DEFAULT_THRESHOLD, MotionResult, classify, zoom_limit

__all__ = ["CLASSES", "DEFAULT_THRESHOLD", "MotionResult", "classify", "estimate", "evaluate", "run_eval", "zoom_limit"]
