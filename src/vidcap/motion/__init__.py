"""Camera motion: estimate a clip's global motion from frames and label it pan/tilt/zoom/static.

from vidcap.motion import estimate, classify
label = classify(estimate(frames), threshold=0.25)   # e.g. "pan_left+zoom_in"
"""

from vidcap.motion.dense import estimate
from vidcap.motion.result import CLASSES, DEFAULT_THRESHOLD, MotionResult, classify, zoom_limit

__all__ = ["CLASSES", "DEFAULT_THRESHOLD", "MotionResult", "classify", "estimate", "evaluate", "run_eval", "zoom_limit"]


def evaluate(pred_labels, true_labels):
    """(accuracy, confusion DataFrame); see vidcap.motion.evaluate.evaluate."""
    from vidcap.motion.evaluate import evaluate as _evaluate

    return _evaluate(pred_labels, true_labels)


def run_eval(labels_csv, threshold: float = DEFAULT_THRESHOLD, workers: int = 2) -> str:
    """The printable accuracy report for a `path,label` CSV; see vidcap.motion.evaluate.run_eval."""
    from vidcap.motion.evaluate import run_eval as _run_eval

    return _run_eval(labels_csv, threshold, workers)
