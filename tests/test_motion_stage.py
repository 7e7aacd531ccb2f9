"""The motion stage through the real runner: labels, numeric columns, still images, error rows."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from media import make_image, make_text_as_video, make_video

from vidcap.errors import VidcapError
from vidcap.motion import synth
from vidcap.motion.flow import quantile
from vidcap.motion.reader import read_gray


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("motion_stage")
    rng = np.random.default_rng(7)
    scene = synth.texture(rng, 900, 700)
    path = synth.camera_path(rng, 40, 900, 700, -0.45, 0.0, 1.0)  # scene moves left: pan_right
    synth.write_mp4(root / "pan.mp4", synth.render(lambda k: scene, *path), fps=20)
    still = synth.camera_path(rng, 40, 900, 700, 0.0, 0.0, 1.0)
    synth.write_mp4(root / "still.mp4", synth.render(lambda k: scene, *still), fps=20)
    make_image(root / "photo.png")
    make_image(root / "png_named.mp4", format="PNG")
    make_text_as_video(root / "text.mp4")
    make_video(root / "one.mp4", n_frames=1)
    rows = ["pan.mp4", "still.mp4", "photo.png", "png_named.mp4", "text.mp4", "one.mp4", "gone.mp4"]
    pd.DataFrame({"path": rows, "clip": range(len(rows))}).to_csv(root / "m.csv", index=False)
    return root / "m.csv"


def test_motion_stage_rows(manifest, tmp_path):
    from vidcap.runner import RunOptions, run_stage
    from vidcap.stages.motion import MotionStage

    out = tmp_path / "out.csv"
    run_stage(MotionStage(threshold=0.25), manifest, out, RunOptions(workers=1, progress=False))
    df = pd.read_csv(out).set_index("path").rename(index=lambda p: Path(p).name)  # written absolute elsewhere
    assert {
        "cmotion",
        "motion_dx",
        "motion_dy",
        "motion_zoom",
        "motion_confidence",
        "motion_score",
        "note",
        "status",
        "error",
        "clip",
    } <= set(df.columns)
    # 45 % of the width over 39 frame steps, as a share of the diagonal; the path's jitter adds a little
    expected = 0.45 * synth.OUT_W / math.hypot(synth.OUT_W, synth.OUT_H) / 39
    assert expected * 0.85 < df.loc["pan.mp4", "motion_score"] < expected * 1.5
    assert df.loc["still.mp4", "motion_score"] < 0.1 * expected
    assert df.loc["pan.mp4", "cmotion"] == "pan_right"
    assert df.loc["pan.mp4", "motion_dx"] == pytest.approx(-0.45, abs=0.03)
    assert df.loc["pan.mp4", "motion_confidence"] > 0.5
    assert df.loc["still.mp4", "cmotion"] == "static"
    for image in ("photo.png", "png_named.mp4"):  # decided by content, not the extension
        assert df.loc[image, "cmotion"] == "static" and df.loc[image, "note"] == "still image"
    codes = df["error"].fillna("").str.split(":").str[0]
    assert codes["text.mp4"] == "decode" and codes["one.mp4"] == "short"
    assert codes["gone.mp4"] == "missing"
    assert (df.loc[["text.mp4", "one.mp4", "gone.mp4"], "status"] == "failed").all()


def test_rethreshold_from_numbers(manifest, tmp_path):
    from vidcap.motion import MotionResult, classify
    from vidcap.runner import RunOptions, run_stage
    from vidcap.stages.motion import MotionStage

    out = tmp_path / "out.csv"
    run_stage(MotionStage(threshold=0.6), manifest, out, RunOptions(workers=1, progress=False))
    row = pd.read_csv(out).set_index("path").rename(index=lambda p: Path(p).name).loc["pan.mp4"]
    assert row["cmotion"] == "static"  # 45 % of the width is below 0.6
    again = MotionResult(dx=row["motion_dx"], dy=row["motion_dy"], zoom=row["motion_zoom"])
    assert classify(again, 0.25) == "pan_right"


def test_reader_keeps_first_and_last_and_raises_codes(media):
    clip = read_gray(str(media["gop8_mp4"]), max_frames=16)
    assert clip.indices[0] == 0 and clip.indices[-1] == 99 and len(clip.frames) <= 20
    assert clip.frames.dtype == np.uint8 and clip.frames.shape[2] <= 160
    rotated = read_gray(str(media["rotated"]))
    assert rotated.frames.shape[1] > rotated.frames.shape[2]  # displayed upright: portrait
    for name, code in (
        ("zero_byte", "decode"),
        ("text_mp4", "decode"),
        ("audio_only", "decode"),
        ("one_frame", "short"),
        ("moov_lost", "decode"),
    ):
        with pytest.raises(VidcapError) as info:
            read_gray(str(media[name]))
        assert info.value.code == code, name


def test_motion_loader_runs_without_pandas(manifest):
    # the decode workers import only what the estimate needs (pandas cost each of them ~0.25 s of CPU);
    # a fresh interpreter stands in for a worker: it loads the loader, labels a real clip, reads a range row
    code = (
        "import sys\n"
        "from vidcap.motion.loader import MotionLoader\n"
        "from vidcap.motion.result import classify\n"
        f"path = {str(manifest.parent / 'pan.mp4')!r}\n"
        "whole, still = MotionLoader()({'path': path})\n"
        "part, _ = MotionLoader()({'path': path, 'start_time': '0', 'end_time': '1.0'})\n"
        "print(classify(whole), still, part.ok, 'pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["pan_right", "False", "True", "False"]


def test_quantile_is_numpy_quantile_bit_for_bit():
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 600, 601, 1200):
        for dtype in (np.float32, np.float64):
            values = (rng.normal(size=n) * 100).astype(dtype)
            for q in (0.0, 0.25, 0.5, 0.75, 0.95, 0.995, 1.0, float(rng.random())):
                assert quantile(values, q) == float(np.quantile(values, q)), (n, dtype, q)


def test_lazy_frames_are_the_eager_frames(manifest, media):
    # `lazy`: frames are scaled to the working width when first read; the same pixels, rotated ones too
    from vidcap.motion.reader import WorkFrames

    for path in (manifest.parent / "pan.mp4", media["rotated"], media["gop8_mp4"]):
        eager = read_gray(str(path), max_frames=16)
        lazy = read_gray(str(path), max_frames=16, lazy=True)
        assert isinstance(lazy.frames, WorkFrames) and lazy.indices == eager.indices
        assert lazy.frames.shape == eager.frames.shape and len(lazy.frames) == len(eager.frames)
        assert np.array_equal(lazy.frames[3], eager.frames[3])
        assert np.array_equal(np.asarray(lazy.frames), eager.frames)
        some = lazy.frames[[0, 2, 5]]
        assert isinstance(some, WorkFrames) and np.array_equal(np.asarray(some), eager.frames[[0, 2, 5]])


def test_lazy_frames_give_the_same_estimate(manifest):
    from dataclasses import asdict

    from vidcap.motion.dense import estimate

    for name in ("pan.mp4", "still.mp4"):
        eager = read_gray(str(manifest.parent / name))
        lazy = read_gray(str(manifest.parent / name), lazy=True)
        a = estimate(eager.frames, times=eager.times, fps=eager.fps)
        b = estimate(lazy.frames, times=lazy.times, fps=lazy.fps)
        assert asdict(a) == asdict(b)


def test_picture_shortcut_agrees_with_the_test_at_working_size():
    # a frame kept at coded size passes the picture test without scaling only when its coarse blocks vary
    # well past the floor: black, noise on black and a faint picture are decided at working size, as before
    from vidcap.motion.dense import SURE_PICTURE, _picture, has_picture
    from vidcap.motion.reader import WorkFrames

    rng = np.random.default_rng(5)
    texture = np.kron(rng.integers(0, 255, (24, 32)), np.ones((8, 8))).astype(np.uint8)
    noise = np.clip(16 + rng.normal(0, 10, (192, 256)), 0, 255).astype(np.uint8)  # iid noise on black
    faint = np.clip(40 + 2.2 * np.sin(np.arange(256) / 20)[None, :] + np.zeros((192, 1)), 0, 255).astype(np.uint8)
    planes = [(f, (160, 120), 0) for f in (texture, np.zeros((192, 256), np.uint8), noise, faint)]
    frames = WorkFrames(planes)
    coarse = [frames.coarse_std(k) for k in range(4)]
    assert coarse[0] > SURE_PICTURE and all(c is not None and c < SURE_PICTURE for c in coarse[1:])
    assert [_picture(frames, k) for k in range(4)] == [has_picture(frames[k]) for k in range(4)]
    assert _picture(frames, 0) and not _picture(frames, 1)


def test_motion_startup_imports_neither_pandas_nor_the_estimator():
    # `vidcap motion` starts the decode workers' fork server before the run's main process imports pandas
    # (`feeder.prestart`): the CLI module, the feeder and the loader it pickles must not import them first
    code = (
        "import sys\n"
        "import vidcap.cli, vidcap.feeder, vidcap.motion.loader\n"
        "print('pandas' in sys.modules, 'cv2' in sys.modules, 'vidcap.motion.dense' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "False"]


def test_prestarted_fork_server_serves_the_run(manifest, tmp_path):
    # the server started early is the one the pool then uses: a run after prestart labels as before
    code = (
        "import multiprocessing.forkserver as fs\n"
        "from vidcap.feeder import prestart\n"
        "from vidcap.motion.loader import MotionLoader\n"
        "prestart(MotionLoader)\n"
        "pid = fs._forkserver._forkserver_pid\n"
        "from vidcap.runner import RunOptions, run_stage\n"
        "from vidcap.stages.motion import MotionStage\n"
        f"run_stage(MotionStage(), {str(manifest)!r}, {str(tmp_path / 'out.csv')!r}, RunOptions(workers=2, progress=False))\n"
        "print(pid is not None and pid == fs._forkserver._forkserver_pid)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[-1] == "True"
    df = pd.read_csv(tmp_path / "out.csv").set_index("path").rename(index=lambda p: Path(p).name)
    assert df.loc["pan.mp4", "cmotion"] == "pan_right" and df.loc["still.mp4", "cmotion"] == "static"


def test_unused_prestarted_server_is_dropped_at_exit():
    # a run that makes no pool (every row done, a bad manifest) does not wait at exit for the server's imports,
    # and leaves no server behind
    import os

    code = (
        "import multiprocessing.forkserver as fs\n"
        "from vidcap.feeder import prestart\n"
        "from vidcap.motion.loader import MotionLoader\n"
        "prestart(MotionLoader)\n"
        "print(fs._forkserver._forkserver_pid)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    pid = int(out[-1])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
