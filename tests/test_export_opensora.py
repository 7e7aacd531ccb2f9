"""`vidcap export --to opensora`: the contracts Open-Sora v1.2.0's `tools.datasets.datautil` and training
loader put on a table, checked with pandas alone (their code is not a dependency), on an export of real
footage and on the raw stage outputs, which break them."""

from __future__ import annotations

import io
import math
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from clirun import vidcap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media import make_image, make_video, make_zero_byte, real_videos

from vidcap.export import CMOTION_KEYS, export_opensora, opensora_cmotion

URL = r"https?://[^\s]+"  # datautil --remove-url's pattern (without its named group)
STOCK = ("The video shows", "The image shows", "In the video,")  # some of datautil's LLAVA_PREFIX
NUMPY_TEXT = re.compile(r"^\[\s*-?\d+(\.\d*)?\s+-?\d")  # `[ 16  49  82 114]`: numpy's str() of an array


def contract_problems(table) -> list[str]:
    """What in `table` Open-Sora's datautil or loader would crash on or get wrong, as short strings."""
    problems = []
    try:  # --difference and --intersection read CSV whatever the extension
        data = pd.read_csv(table)
    except Exception as exc:  # noqa: BLE001 (whatever Open-Sora would crash on)
        return [f"read_csv: {type(exc).__name__}"]
    if "path" not in data.columns or "text" not in data.columns:
        return ["columns: no path or text"]
    if not all(isinstance(p, str) and os.path.isabs(p) for p in data["path"]):
        problems.append("path: not absolute (--ext and the loader resolve against the working directory)")
    try:  # --remove-url runs before any empty-caption filter
        kept = data[~data["text"].str.contains(URL, regex=True)]
        assert len(kept) == len(data) - int(data["text"].astype(str).str.contains(URL).sum())
    except Exception as exc:  # noqa: BLE001 (whatever Open-Sora would crash on)
        problems.append(f"remove-url: {type(exc).__name__}")
    for text in data["text"]:
        try:  # --refine-llm-caption's remove_caption_prefix, --lang's detector and --clean-caption's str()
            for prefix in STOCK:
                if text.startswith((prefix, prefix.lower())):
                    assert text[len(prefix) :].strip()[0]
            assert str(text) != "nan" and text.strip()
        except Exception as exc:  # noqa: BLE001 (whatever Open-Sora would crash on)
            problems.append(f"text: {type(exc).__name__} on {text!r}")
            break
    for col in ("num_frames", "height", "width", "resolution"):
        if col not in data.columns or not pd.api.types.is_integer_dtype(data[col]):
            problems.append(f"{col}: not an integer column")
    if "aspect_ratio" not in data.columns or "resolution" not in data.columns:
        problems.append("aspect_ratio/resolution: absent (--info writes them)")
    else:
        ar = data["height"] / data["width"]
        if (
            not (ar - data["aspect_ratio"]).abs().max() < 1e-12
            or (data["height"] * data["width"] != data["resolution"]).any()
        ):
            problems.append("aspect_ratio/resolution: not height/width and height*width")
    for row in data[[c for c in ("num_frames", "height", "width") if c in data.columns]].itertuples(index=False):
        try:  # the bucket builder: T == 1, H * W < limit, comparisons with numbers
            assert all(v is not None and not pd.isna(v) and v > 0 for v in row)
        except Exception as exc:  # noqa: BLE001 (whatever Open-Sora would crash on)
            problems.append(f"bucket sizes: {type(exc).__name__} on {tuple(row)}")
            break
    if "cmotion" in data.columns:
        bad = sorted({str(v) for v in data["cmotion"] if v not in CMOTION_KEYS})
        if bad:
            problems.append(f"merge-cmotion: KeyError on {bad[:3]}")
    if {"status", "error"} & set(data.columns):
        problems.append("status/error: one name for every stage (--intersection keeps the first table's)")
    round_trip = pd.read_csv(io.StringIO(data.to_csv(index=False)))  # what every datautil command writes
    for col in ("num_frames", "height", "width"):
        if col in data.columns and round_trip[col].dtype != data[col].dtype:
            problems.append(f"{col}: dtype changes on a round trip")
    for col in data.columns:
        if data[col].map(lambda v: isinstance(v, str) and bool(NUMPY_TEXT.match(v))).any():
            problems.append(f"{col}: numpy text")
    return problems


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> Path:
    """Real clips (what is on this machine, else generated ones), a JPEG, a 0-byte file and a missing path,
    listed relative; caption (fake model) and tags beside the manifest, motion in another folder."""
    root = tmp_path_factory.mktemp("export")
    (root / "v").mkdir()
    names = []
    for name, src in sorted(real_videos().items())[:3]:
        shutil.copy(src, root / "v" / name)
        names.append(name)
    for i in range(max(0, 3 - len(names))):
        names.append(make_video(root / "v" / f"gen{i}.mp4", 30 + i, (96, 64)).name)
    make_image(root / "v" / "still.jpg", (160, 120))
    make_zero_byte(root / "v" / "empty.mp4")
    names += ["still.jpg", "empty.mp4", "gone.mp4"]
    pd.DataFrame({"path": [f"v/{n}" for n in names]}).to_csv(root / "m.csv", index=False)
    vidcap("caption", root / "m.csv", "-o", root / "m_caption.csv", "--model", "fake", "--workers", "0", "-q")
    (root / "mo").mkdir()
    vidcap("motion", root / "m.csv", "-o", root / "mo" / "m_cmotion.parquet", "--workers", "0", "-q")
    vidcap("tag", root / "m_caption.csv", "--key", "objects", "--backend", "fake", "-o", root / "m_objects.csv", "-q")
    return root


def _inputs(root: Path) -> list[Path]:
    return [root / "m_caption.csv", root / "mo" / "m_cmotion.parquet", root / "m_objects.csv"]


def test_raw_outputs_break_the_contracts(outputs, tmp_path):
    """Today's outputs, as they are or joined, are what Open-Sora's tools crash on (the check must see it)."""
    caption = contract_problems(outputs / "m_caption.csv")
    assert any(p.startswith("text:") for p in caption) and any(p.startswith("path:") for p in caption)
    assert any(p.startswith("num_frames:") for p in caption) and any(p.startswith("aspect_ratio") for p in caption)
    assert contract_problems(outputs / "mo" / "m_cmotion.parquet")[0].startswith("read_csv")
    joined = tmp_path / "all.csv"
    vidcap("join", *_inputs(outputs), "-o", joined)
    problems = contract_problems(joined)
    assert any(p.startswith("merge-cmotion") for p in problems) and any(p.startswith("status/error") for p in problems)


@pytest.mark.parametrize("rule", ["drop", "static"])
def test_export_meets_every_contract(outputs, tmp_path, rule):
    out = tmp_path / "train.csv"
    res = vidcap("export", *_inputs(outputs), "--to", "opensora", "-o", out, "--unclassified", rule)
    assert contract_problems(out) == []
    df, left = pd.read_csv(out), pd.read_csv(tmp_path / "train_excluded.csv")
    assert f"wrote {len(df)} rows" in res.stdout
    # every input row lands once: in the export or, with its reason, in the side file
    caption = pd.read_csv(outputs / "m_caption.csv")
    assert len(df) + len(left) == len(caption) and left["export_error"].notna().all()
    assert set(left["path"]) >= {str(outputs / "v" / "empty.mp4"), str(outputs / "v" / "gone.mp4")}
    ok = caption[caption["status"] == "ok"]
    assert set(df["path"]) <= {str(outputs / p) for p in ok["path"]}
    for row in df.itertuples():  # sizes as decoded, stills as --info has them
        src = ok[ok["path"] == os.path.relpath(row.path, outputs)].iloc[0]
        assert (row.num_frames, row.width, row.height) == (src["num_frames"], src["width"], src["height"])
        assert math.isnan(row.fps) if row.path.endswith(".jpg") else row.fps == src["fps"]
    assert set(df["objects"]) <= {"NONE_FOUND"} | {c for c in df["objects"] if not c.startswith("[")}
    assert {"caption_status", "motion_status", "objects_status"} <= set(df.columns)
    if rule == "static":
        assert len(left) == 2  # the 0-byte file and the missing one
    else:
        motion = pd.read_parquet(outputs / "mo" / "m_cmotion.parquet")
        unclassified = ((motion["cmotion"] == "unclassified") & (caption["status"] == "ok")).sum()
        assert left["export_error"].str.startswith("unclassified").sum() == unclassified


def test_join_names_each_stage_status(outputs, tmp_path):
    joined = tmp_path / "all.parquet"
    vidcap("join", *_inputs(outputs), "-o", joined)
    df = pd.read_parquet(joined)
    cap = pd.read_csv(outputs / "m_caption.csv")
    assert df["caption_status"].tolist() == cap["status"].tolist()
    assert df["motion_status"].tolist() == pd.read_parquet(outputs / "mo" / "m_cmotion.parquet")["status"].tolist()
    assert df["objects_error"].notna().tolist() == (cap["status"] != "ok").tolist()
    assert df["path"].tolist() == cap["path"].tolist()  # the first table's order, not sorted


def test_cmotion_rule():
    assert opensora_cmotion("pan_left") == "pan_left"
    assert opensora_cmotion("unclassified") is None and opensora_cmotion(float("nan")) is None
    row = {"motion_dx": 0.3, "motion_dy": 0.0, "motion_zoom": 2.0}  # the zoom moved the edge by 0.5
    assert opensora_cmotion("pan_left+zoom_in", row) == "zoom_in"
    assert opensora_cmotion("pan_left+zoom_out", {"motion_dx": 0.4, "motion_zoom": 1 / 1.6}) == "pan_left"
    assert opensora_cmotion("tilt_up+zoom_in") == "tilt_up"  # no numbers: the first component


def test_cli_refuses_in_one_sentence(outputs, tmp_path):
    for args, words in [
        (["--to", "webvid", "-o", tmp_path / "t.csv"], "not a known target"),
        (["--to", "opensora", "-o", tmp_path / "t.parquet"], "CSV only"),
        (["--to", "opensora", "-o", tmp_path / "t.csv", "--unclassified", "pan"], "drop or static"),
    ]:
        res = vidcap("export", outputs / "m_caption.csv", *args, check=False)
        assert res.returncode == 2 and words in res.stderr and "Traceback" not in res.stderr
    res = vidcap(
        "export", outputs / "mo" / "m_cmotion.parquet", "--to", "opensora", "-o", tmp_path / "t.csv", check=False
    )
    assert res.returncode == 2 and "vidcap caption" in res.stderr
    failed = tmp_path / "failed.csv"  # nothing to export: exit 1, the side file says why for each row
    pd.DataFrame(
        {
            "path": ["a.mp4"],
            "text": [None],
            "num_frames": [None],
            "width": [None],
            "height": [None],
            "status": ["failed"],
            "error": ["missing: no such file"],
        }
    ).to_csv(failed, index=False)
    res = vidcap("export", failed, "--to", "opensora", "-o", tmp_path / "none.csv", check=False)
    assert res.returncode == 1 and "no row could be exported" in res.stderr
    assert "missing: no such file" in pd.read_csv(tmp_path / "none_excluded.csv")["export_error"].iloc[0]


LABELS = st.sampled_from([*CMOTION_KEYS, "unclassified", "pan_left+zoom_in", "pan_right+tilt_down+zoom_out", None])
SIZE = st.one_of(st.integers(1, 4096), st.none(), st.just(0), st.just(12.5))
TEXT = st.one_of(st.none(), st.text(max_size=40), st.sampled_from(["The video shows", "see https://x.io now", "\r\n"]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(
            TEXT, SIZE, SIZE, SIZE, LABELS, st.sampled_from(["ok", "ok", "failed"]), st.lists(st.text(max_size=8))
        ),
        min_size=1,
        max_size=8,
    )
)
def test_any_table_exports_within_the_contracts(tmp_path, rows):
    """Whatever the cells (captions of any text, missing or fractional sizes, any motion label), the export
    meets every contract and each row lands in it or in the side file."""
    df = pd.DataFrame(
        {
            "path": [f"clip{i}.mp4" for i in range(len(rows))],
            "text": [r[0] for r in rows],
            "num_frames": [r[1] for r in rows],
            "width": [r[2] for r in rows],
            "height": [r[3] for r in rows],
            "fps": 24.0,
            "cmotion": [r[4] for r in rows],
            "frame_idx": [[1, 2, 3]] * len(rows),
            "objects": [r[6] for r in rows],
            "status": [r[5] for r in rows],
            "error": ["" if r[5] == "ok" else "decode: bad" for r in rows],
        }
    )
    src = tmp_path / "in.parquet"
    df.to_parquet(src)
    out = tmp_path / "train.csv"
    counts = export_opensora([src], out)
    got = pd.read_csv(out) if counts["rows"] else None
    assert counts["rows"] + counts["excluded"] == len(rows)
    if got is not None:
        assert contract_problems(out) == []
        assert all(p.startswith(str(tmp_path)) for p in got["path"])
