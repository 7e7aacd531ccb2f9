"""`vidcap export --to opensora` on real files and hostile captions (issue 32): every row Open-Sora's code
would read differently from what vidcap meant goes to the excluded file with its reason; sizes and fps are the
ones Open-Sora's `--info` reads (stored frames, PyAV's average rate)."""

from __future__ import annotations

import io
import shutil
import string

import pandas as pd
import pytest
from clirun import vidcap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media import make_gif, make_image, make_video
from PIL import Image

from vidcap import tables
from vidcap.export import PANDAS_NA, export_opensora, has_words
from vidcap.export_media import IMG_EXTENSIONS, VID_EXTENSIONS, view

ROWS = {  # manifest path -> the reason code it must be excluded with ("" = exported)
    "clips/a.mp4": "",
    "./clips/../clips/a.mp4": "duplicate",
    "clips/na.mp4": "na_text",
    "clips/space.mp4": "empty_text",
    "clips/rot.mp4": "rotated",
    "clips/w.webm": "unsupported_format",
    "clips/g.gif": "unsupported_format",
    "clips/i.jpg": "",
    "clips/exif.jpg": "rotated",
    "clips/jpeg_named.mp4": "",
    "clips/b.MOV": "",
}
HOSTILE = {"clips/na.mp4": "N/A", "clips/space.mp4": " \t\u00a0\n"}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_files")
    clips = root / "clips"
    clips.mkdir()
    for name in ("a.mp4", "na.mp4", "space.mp4"):
        make_video(clips / name, 24, (96, 64))
    make_video(clips / "rot.mp4", 24, (128, 72), rotation=90)
    make_video(clips / "w.webm", 12, (96, 64))
    make_video(clips / "b.mov", 12, (80, 48))
    (clips / "b.mov").rename(clips / "b.MOV")
    make_gif(clips / "g.gif")
    make_image(clips / "i.jpg", (160, 120))
    img = Image.open(clips / "i.jpg")
    exif = img.getexif()
    exif[0x0112] = 6  # shown turned 90 degrees
    img.save(clips / "exif.jpg", exif=exif)
    shutil.copyfile(clips / "i.jpg", clips / "jpeg_named.mp4")
    pd.DataFrame({"path": list(ROWS)}).to_csv(root / "m.csv", index=False)
    vidcap("caption", root / "m.csv", "-o", root / "cap.parquet", "--model", "fake", "--workers", "0", "-q")
    vidcap("motion", root / "m.csv", "-o", root / "cm.csv", "--workers", "0", "-q")
    cap = tables.read(root / "cap.parquet")  # what a real model sometimes returns
    cap["text"] = [HOSTILE.get(p, t) for p, t in zip(cap["path"], cap["text"], strict=False)]
    tables.write(cap, root / "cap.parquet")
    return root


def _export(root, *extra):
    out = root / f"train{len(extra)}.csv"
    vidcap(
        "export",
        root / "cap.parquet",
        root / "cm.csv",
        "--to",
        "opensora",
        "-o",
        out,
        "--unclassified",
        "static",
        *extra,
    )
    return pd.read_csv(out), pd.read_csv(str(out).replace(".csv", "_excluded.csv"))


def test_hostile_rows_are_excluded_with_their_reason(hostile):
    train, left = _export(hostile)
    assert len(train) + len(left) == len(ROWS)  # every row once
    codes = dict(zip(left.index, left["export_error"].str.split(":").str[0], strict=False))
    want = [code for code in ROWS.values() if code]
    assert sorted(codes.values()) == sorted(want)
    assert train["path"].map(lambda p: p.rsplit("/", 1)[-1]).tolist() == ["a.mp4", "i.jpg", "jpeg_named.mp4", "b.MOV"]
    assert train["path"].is_unique and train["text"].map(lambda t: isinstance(t, str) and t.strip() != "").all()
    dup = left["export_error"][left["export_error"].str.startswith("duplicate")].iloc[0]
    assert "row 1 " in dup


def test_sizes_and_fps_are_what_opensora_reads(hostile):
    train, _ = _export(hostile)
    for row in train.to_dict("records"):
        seen = view(row["path"])  # PyAV / Pillow as Open-Sora's read_video and get_image_info call them
        assert (row["height"], row["width"]) == (seen.height, seen.width)
        assert row["aspect_ratio"] == seen.height / seen.width and row["resolution"] == seen.height * seen.width
    fps = dict(zip(train["path"].map(lambda p: p.rsplit("/", 1)[-1]), train["fps"], strict=False))
    assert fps["a.mp4"] == 24.0 and fps["jpeg_named.mp4"] == 25.0 and pd.isna(fps["i.jpg"])


def test_rotated_keep_exports_stored_sizes_with_a_note(hostile):
    train, left = _export(hostile, "--rotated", "keep")
    names = train["path"].map(lambda p: p.rsplit("/", 1)[-1])
    rot = train[names == "rot.mp4"].iloc[0]
    assert (rot["width"], rot["height"]) == (128, 72)  # stored; the caption stage saw 72x128 as displayed
    ex = train[names == "exif.jpg"].iloc[0]
    assert (ex["width"], ex["height"]) == (160, 120)
    assert "display matrix" in rot["export_note"] and "EXIF orientation 6" in ex["export_note"]
    assert not left["export_error"].str.startswith("rotated").any()


def test_extension_lists_match_opensora():
    # opensora/datasets/utils.py VID_EXTENSIONS (v1.2.0, v1.3, main) and torchvision 0.18's IMG_EXTENSIONS
    assert VID_EXTENSIONS == (".mp4", ".avi", ".mov", ".mkv")
    assert {".jpg", ".png", ".webp"} <= set(IMG_EXTENSIONS) and ".gif" not in IMG_EXTENSIONS


CAPTION = st.one_of(
    st.sampled_from(sorted(PANDAS_NA)),
    st.sampled_from([" ", "\t", "\u00a0", "\u2028", "\r\n", " NA", "nan ", "1e3", "007", "True", "The video shows"]),
    st.sampled_from(["一只狗在跑", "jc6640 640x480", "A dog runs.", 'Un chien court, "vite".\nFin.']),
    st.text(string.printable + "\u00a0\u3000é", max_size=20),
)


@pytest.fixture(scope="module")
def six_clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("six")
    return [str(make_video(root / f"c{i}.mp4", 8, (64, 48))) for i in range(6)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(captions=st.lists(CAPTION, min_size=6, max_size=6))
def test_random_captions_read_back_as_written(tmp_path, six_clips, captions):
    """Whatever a model returns: every row lands in one file, and every exported caption comes back from
    `pandas.read_csv` (Open-Sora's reader, default settings) as the same non-empty string."""
    df = pd.DataFrame({"path": six_clips, "text": captions, "num_frames": 8, "width": 64, "height": 48, "fps": 8.0})
    df["status"] = "ok"
    src = tmp_path / "cap.parquet"
    tables.write(df, src)
    counts = export_opensora([src], tmp_path / "train.csv")
    raw = (tmp_path / "train.csv").read_bytes()
    back = pd.read_csv(io.BytesIO(raw))  # as Open-Sora reads it: default settings
    left = pd.read_csv(tmp_path / "train_excluded.csv") if counts["excluded"] else pd.DataFrame()
    assert counts["rows"] + counts["excluded"] == 6
    given_text = dict(zip(six_clips, captions, strict=False))
    assert back["text"].tolist() == [given_text[p] for p in back["path"]]  # the same strings, as written
    assert all(isinstance(t, str) and t.strip() and t not in PANDAS_NA and has_words(t) for t in back["text"])
    for code in left.get("export_error", pd.Series(dtype=str)):
        assert code.split(":")[0] in ("empty_text", "na_text", "no_words")
