"""Camera motion: label rules, sign conventions, measured accuracy on a small labelled set, the stage."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from vidcap.motion import MotionResult, classify, estimate, evaluate, synth, zoom_limit
from vidcap.motion.result import normalize_label

# ---- classify rules on hand-made results ----


@pytest.mark.parametrize(
    "dx,dy,zoom,label",
    [
        (0.3, 0, 1, "pan_left"),  # scene pixels moved right: the camera turned left
        (-0.3, 0, 1, "pan_right"),
        (0, 0.3, 1, "tilt_up"),  # pixels moved down: the camera tilted up
        (0, -0.3, 1, "tilt_down"),
        (0, 0, 1.6, "zoom_in"),  # pixels spread out
        (0, 0, 1 / 1.6, "zoom_out"),
        (0.1, -0.2, 1.2, "static"),
        (-0.7, 0.6, 0.5, "pan_right+tilt_up+zoom_out"),  # the zoom's centre at the frame edge explains 0.25
        (0.65, 0, 1.7, "pan_left+zoom_in"),
        (0, 0.32, 1.87, "zoom_in"),  # the zoom about a point 37 % of the height below the middle
        (-0.4, 0.3, 0.5, "zoom_out"),  # 0.15 and 0.05 left once the zoom is about the nearest frame point
        (0.3, 0, 1.3, "pan_left"),  # a zoom below the threshold is no zoom: it explains no pan
    ],
)
def test_classify_labels_and_fixed_order(dx, dy, zoom, label):
    assert classify(MotionResult(dx=dx, dy=dy, zoom=zoom, confidence=1)) == label


def test_threshold_means_fraction_of_frame_moved():
    # threshold 0.2: tilt_up only when pixels moved down by more than 20 % of the height
    assert classify(MotionResult(dy=0.21), threshold=0.2) == "tilt_up"
    assert classify(MotionResult(dy=0.19), threshold=0.2) == "static"
    assert classify(MotionResult(dy=0.21), threshold=0.25) == "static"
    # zoom: the frame edge (half a frame from the centre) moves by threshold x frame size
    assert zoom_limit(0.25) == pytest.approx(1.5)
    assert classify(MotionResult(zoom=1.49), 0.25) == "static"
    assert classify(MotionResult(zoom=1.51), 0.25) == "zoom_in"
    assert classify(MotionResult(zoom=1 / 1.51), 0.25) == "zoom_out"
    assert classify(MotionResult(zoom=1 / 1.49), 0.25) == "static"


def test_unclassified_when_evidence_disagrees():
    for reason in ("scene cut", "mostly foreground motion", "too few tracked points"):
        assert classify(MotionResult(dx=0.5, reason=reason)) == "unclassified"


def test_labels_normalise_and_evaluate_counts_components():
    assert normalize_label("zoom_in+pan_left") == "pan_left+zoom_in"
    with pytest.raises(ValueError):
        normalize_label("pan_sideways")
    with pytest.raises(ValueError):
        normalize_label("static+zoom_in")
    acc, table = evaluate(
        ["pan_left", "static", "pan_left+zoom_in", "unclassified"],
        ["pan_left", "tilt_up", "pan_left+zoom_out", "unclassified"],
    )
    assert acc == pytest.approx(0.5)
    assert table.loc["pan_left", "pan_left"] == 2 and table.loc["tilt_up", "static"] == 1
    assert table.loc["zoom_out", "zoom_in"] == 1 and table.loc["unclassified", "unclassified"] == 1
    assert int(table.values.sum()) == 5


# ---- sign conventions on rendered frames (no files) ----


def _window_frames(dx: float, dy: float, zoom: float, n: int = 24) -> np.ndarray:
    rng = np.random.default_rng(3)
    scene = synth.texture(rng, 900, 700)
    path = synth.camera_path(rng, n, 900, 700, dx, dy, zoom)
    assert path is not None
    truth = synth.truth_of(*path)
    assert truth.dx == pytest.approx(dx, abs=0.02) and truth.zoom == pytest.approx(zoom, rel=0.02)
    return np.stack(synth.render(lambda k: scene, *path))


@pytest.mark.parametrize(
    "dx,dy,zoom,label",
    [
        (0.4, 0, 1, "pan_left"),
        (-0.4, 0, 1, "pan_right"),
        (0, 0.4, 1, "tilt_up"),
        (0, -0.4, 1, "tilt_down"),
        (0, 0, 1.8, "zoom_in"),
        (0, 0, 1 / 1.8, "zoom_out"),
    ],
)
def test_sign_conventions(dx, dy, zoom, label):
    frames = _window_frames(dx, dy, zoom)
    result = estimate(frames)
    assert result.ok and result.confidence > 0.5
    assert result.dx == pytest.approx(dx, abs=0.03) and result.dy == pytest.approx(dy, abs=0.03)
    assert math.log(result.zoom) == pytest.approx(math.log(zoom), abs=0.03)
    assert classify(result) == label


def test_gray_input_and_single_frame():
    frames = _window_frames(0.4, 0, 1, n=12)
    gray = frames.mean(axis=-1).astype(np.uint8)
    assert classify(estimate(gray)) == "pan_left"
    assert classify(estimate(frames[:1])) == "static"


def test_flat_clip_and_scene_cut_are_unclassified():
    flat = np.full((10, 120, 160, 3), 128, np.uint8)
    assert estimate(flat).reason == "no picture"
    rng = np.random.default_rng(0)
    a, b = synth.texture(rng, 400, 300), synth.texture(rng, 400, 300)
    frames = np.stack([a[:240, :320]] * 6 + [b[:240, :320]] * 6)
    result = estimate(frames)
    assert result.reason == "scene cut" and classify(result) == "unclassified"


# ---- measured accuracy on a small labelled set of encoded clips ----


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    out = tmp_path_factory.mktemp("motion_set")
    return synth.build_set(out, count=16, seed=11, seconds=2.0)


def test_accuracy_on_small_labelled_set(labelled):
    from vidcap.motion.evaluate import predict_paths

    df = pd.read_csv(labelled)
    assert {"pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out", "static", "unclassified"} <= {
        part for label in df["label"] for part in label.split("+")
    }
    paths = [str(labelled.parent / p) for p in df["path"]]
    labels, _, errors, _ = predict_paths(paths, workers=1)
    assert not any(errors)
    accuracy, table = evaluate(labels, df["label"])
    wrong = [(p, t) for p, t in zip(labels, df["label"], strict=False) if p != t]
    assert accuracy >= 0.9, (accuracy, wrong, table)


def test_run_eval_report(labelled):
    from vidcap.motion import run_eval

    report = run_eval(str(labelled), threshold=0.25, workers=1)
    assert "exact-label accuracy:" in report and "confusion" in report
    assert "pan_left" in report and "clips: 16" in report


def test_run_eval_refuses_unknown_labels(tmp_path):
    from vidcap.errors import UsageError
    from vidcap.motion import run_eval

    (tmp_path / "l.csv").write_text("path,label\na.mp4,pan_sideways\n")
    with pytest.raises(UsageError, match="pan_sideways"):
        run_eval(str(tmp_path / "l.csv"), workers=1)


def test_fade_from_black_is_measured_from_the_picture():
    frames = _window_frames(0.4, 0, 1, n=30)
    frames[:3] = 0  # three black frames, then the shot
    result = estimate(frames)
    assert result.ok and classify(result) == "pan_left"
    assert estimate(np.concatenate([np.zeros_like(frames[:20]), frames[:8]])).reason == (
        "no picture"
    )  # mostly black: nothing to measure
