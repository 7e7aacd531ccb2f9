"""One table per clip: stages chain on each other's outputs in any order and format, every input column
survives whatever its name, CSV round-trips any string a model can return, outputs written elsewhere
still resolve their paths, `join` puts stage outputs side by side and `diff` compares resolved paths."""

from __future__ import annotations

import csv
import os
import string
from pathlib import Path

import pandas as pd
import pytest
from clirun import vidcap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media import make_video

from vidcap.manifest import column_plan, read_table, write_table

AWKWARD = ["text", "text_input", "status_input", "_rid", "_src", "légende", "error_input_2"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("one_table")
    (root / "v").mkdir()
    paths = [make_video(root / "v" / f"c{i}.mp4", 24, (96, 64)) for i in range(4)]
    rows = {"path": [os.path.relpath(p, root) for p in paths] + ["v/missing.mp4"]}
    for i, col in enumerate(AWKWARD):
        rows[col] = [f'{col}-{j}\r\nsecond line, "quoted"' if i == 0 else f"{col} {j}" for j in range(5)]
    pd.DataFrame(rows).to_csv(root / "m.csv", index=False)
    pd.DataFrame(rows).to_parquet(root / "m.parquet", index=False)
    return root


def _inputs_intact(out: pd.DataFrame, manifest: pd.DataFrame, stages: int) -> None:
    assert len(out) == len(manifest)
    assert out.columns.is_unique
    for col in AWKWARD:  # the original column, under its name or a renamed one, holds the original values
        names = [c for c in out.columns if c == col or c.startswith(f"{col}_input")]
        assert any(out[c].astype(str).tolist() == manifest[col].astype(str).tolist() for c in names), col
    assert out["path"].tolist() == manifest["path"].tolist()


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_three_stage_chain_keeps_every_column(clips, ext):
    """caption -> motion -> caption again (the old `text`, `status`, `error` pile up as *_input_N), same
    folder as the manifest, so paths stay as given."""
    manifest = read_table(clips / f"m{ext}")
    first = clips / f"a{ext}"
    vidcap("caption", clips / f"m{ext}", "-o", first, "--model", "fake", "--workers", "0", "-q")
    second = clips / f"b{ext}"
    vidcap("motion", first, "-o", second, "--workers", "0", "-q")
    third = clips / f"c{ext}"
    vidcap("caption", second, "-o", third, "--model", "fake", "--workers", "0", "-q")
    out = read_table(third)
    _inputs_intact(out, manifest, 3)
    assert {"text", "cmotion", "status", "status_input", "status_input_2", "text_input_2"} <= set(out.columns)
    assert out["status"].tolist() == ["ok"] * 4 + ["failed"]


def test_output_elsewhere_feeds_the_next_stage(clips, tmp_path):
    out = tmp_path / "deep" / "sub" / "cap.parquet"
    vidcap("caption", clips / "m.csv", "-o", out, "--model", "fake", "--workers", "0", "-q")
    df = pd.read_parquet(out)
    assert all(Path(p).is_absolute() for p in df["path"])  # written absolute: they resolve from anywhere
    motion = tmp_path / "mo.csv"
    vidcap("motion", out, "-o", motion, "--workers", "0", "-q")
    got = pd.read_csv(motion)
    assert got["status"].tolist() == ["ok"] * 4 + ["failed"]
    assert got["error"].iloc[-1].startswith("missing")


def test_join_caption_and_motion_then_diff(clips, tmp_path):
    cap = clips / "j_caption.csv"
    vidcap("caption", clips / "m.csv", "-o", cap, "--model", "fake", "--workers", "0", "-q")
    mo = tmp_path / "j_cmotion.parquet"  # another folder, another format: paths written absolute
    vidcap("motion", clips / "m.csv", "-o", mo, "--workers", "0", "-q")
    joined = tmp_path / "all.parquet"
    res = vidcap("join", cap, mo, "-o", joined)
    assert "wrote 5 rows" in res.stdout
    df = pd.read_parquet(joined)
    assert len(df) == 5 and df["text"].notna().sum() == 4 and df["cmotion"].notna().sum() == 4
    assert df["path"].tolist() == pd.read_csv(cap)["path"].tolist()  # the first table's order and paths
    # one `status` (ok when every stage is ok) and one `error`, beside each stage's own pair; nothing else
    assert [c for c in df.columns if "status" in c or "error" in c] == [
        "caption_status",
        "caption_error",
        "motion_status",
        "motion_error",
        "status",
        "error",
    ]
    assert df["status"].tolist() == ["ok"] * 4 + ["failed"]
    assert df["error"].iloc[-1].startswith("caption: missing") and "; motion: missing" in df["error"].iloc[-1]
    # tags from the captions, then all three stages in one table, and the review page shows each
    tags = tmp_path / "j_objects.csv"
    vidcap("tag", cap, "--key", "objects", "--backend", "fake", "-o", tags, "-q")
    three = tmp_path / "three.parquet"
    assert "wrote 5 rows" in vidcap("join", cap, mo, tags, "-o", three).stdout
    table = pd.read_parquet(three)
    assert {"text", "cmotion", "objects"} <= set(table.columns) and len(table) == 5
    page = tmp_path / "r.html"
    vidcap("report", three, "-o", page, "--workers", "0")
    html = page.read_text()
    assert table["text"].iloc[0] in html and table["cmotion"].iloc[0] in html and "objects" in html
    # diff: the same clips written relative in one table and absolute in the other are one clip
    left = tmp_path / "left.csv"
    vidcap("diff", clips / "m.csv", mo, "-o", left)
    assert len(pd.read_csv(left)) == 0


def test_outputs_follow_the_umask(clips, tmp_path):
    out = tmp_path / "o.csv"
    vidcap("caption", clips / "m.csv", "-o", out, "--model", "fake", "--workers", "0", "-q")
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask


TEXT = st.text(alphabet=st.characters(codec=None, categories=None), max_size=60) | st.sampled_from(
    ["A man walks.\rA dog follows.", "\r\n", "\n\n", '"', '""quoted""', "\x00", "\ud800 lone", "x" * 100_000, ""]
)
NAMES = st.lists(
    st.text(alphabet=string.ascii_letters + "_é", min_size=1, max_size=8) | st.sampled_from(AWKWARD),
    min_size=1,
    max_size=6,
    unique=True,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=NAMES, cells=st.lists(TEXT, min_size=1, max_size=8), fmt=st.sampled_from(["csv", "parquet"]))
def test_any_string_round_trips(tmp_path, names, cells, fmt):
    df = pd.DataFrame({name: cells for name in names}, dtype=object)  # object: pandas' str dtype refuses surrogates
    path = tmp_path / f"t.{fmt}"
    write_table(df, path)
    want = df.map(lambda v: "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in v))
    back = pd.read_csv(path, keep_default_na=False, dtype=str) if fmt == "csv" else pd.read_parquet(path)
    assert back.columns.tolist() == names and back.values.tolist() == want.values.tolist()
    if fmt == "csv":  # Python's own csv module agrees
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        assert rows[1:] == want.values.tolist()


@given(
    inputs=st.lists(st.text(alphabet="abtex_inpu2", min_size=1, max_size=12), max_size=10, unique=True),
    outputs=st.lists(st.sampled_from(["text", "status", "error", "cmotion", "text_input"]), unique=True),
)
def test_column_plan_never_collides(inputs, outputs):
    plan = column_plan(inputs, outputs)
    final = [plan.get(c, c) for c in inputs] + outputs
    assert len(final) == len(set(final))
    assert set(plan) == set(inputs) & set(outputs)


def test_a_recording_still_being_written_is_not_ok(tmp_path):
    """An MPEG-TS file that grows while it is read decodes without an error but short: it must not be `ok`
    (code `growing`, redone on resume); the finished file then reads fine."""
    import threading

    from vidcap.errors import VidcapError
    from vidcap.frames import sample_frames

    full = make_video(tmp_path / "full.ts", 240, (320, 240))
    data = full.read_bytes()
    growing = tmp_path / "rec.ts"
    growing.write_bytes(data[: len(data) // 3])
    stop = threading.Event()

    def writer():
        pos = len(data) // 3
        with open(growing, "ab") as fh:
            while not stop.is_set() and pos < len(data):
                fh.write(data[pos : pos + 1880])
                fh.flush()
                pos += 1880
                stop.wait(0.002)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with pytest.raises(VidcapError) as err:
            sample_frames(str(growing), 8, "uniform", strategy="sequential")
        assert err.value.code == "growing"
    finally:
        stop.set()
        thread.join()
    growing.write_bytes(data)
    assert sample_frames(str(growing), 8, "uniform").num_frames == 240


COLUMN = st.text(alphabet=string.ascii_letters + "_é ", min_size=1, max_size=10) | st.sampled_from(
    AWKWARD + ["status", "error", "cmotion", "flags", "path_input"]
)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    names=st.lists(COLUMN, max_size=5, unique=True).filter(lambda ns: "path" not in ns),
    values=st.lists(TEXT, min_size=5, max_size=5),
    fmt=st.sampled_from([".csv", ".parquet"]),
    order=st.permutations(["caption", "motion", "caption"]),
)
def test_random_manifests_through_three_stages(clips, tmp_path_factory, names, values, fmt, order):
    """Random column names and cell strings through a chain of three stages, in the library: every input
    column comes back with its values (under its name or a `_input` name), one row per clip."""
    from vidcap.backends.base import CaptionOptions
    from vidcap.backends.registry import resolve_model
    from vidcap.runner import RunOptions, run_stage
    from vidcap.stages.caption import CaptionStage
    from vidcap.stages.motion import MotionStage

    root = tmp_path_factory.mktemp("chain")
    paths = [str(clips / "v" / f"c{i}.mp4") for i in range(4)] + [str(clips / "v" / "missing.mp4")]
    manifest = pd.DataFrame({"path": paths, **{n: values for n in names}}, dtype=object)
    src = root / f"m{fmt}"
    write_table(manifest, src)
    expected = read_table(src)
    for i, stage in enumerate(order):
        out = root / f"s{i}{fmt}"
        st_ = CaptionStage(resolve_model("fake"), CaptionOptions()) if stage == "caption" else MotionStage(0.25)
        run_stage(st_, src, out, RunOptions(workers=0, progress=False))
        src = out
    got = read_table(src)
    assert len(got) == 5 and got.columns.is_unique and got["path"].tolist() == paths
    for col in expected.columns:
        if col == "path":
            continue
        names_now = [c for c in got.columns if c == col or str(c).startswith(f"{col}_input")]
        assert any(got[c].astype(str).tolist() == expected[col].astype(str).tolist() for c in names_now), col


@pytest.mark.parametrize("stage", ["caption", "motion"])
def test_the_schema_does_not_depend_on_which_rows_failed(clips, tmp_path, stage):
    """A Parquet output whose every row failed has the same columns and types as one with ok rows: a result
    column no saved row had a value in is its declared type (numbers, lists of frame indices) or text, never
    Arrow's null type (which other tools cannot concatenate or filter as text)."""
    import pyarrow.parquet as pq

    mixed, failed = tmp_path / "mixed.csv", tmp_path / "failed.csv"
    pd.DataFrame({"path": [str(clips / "v" / "c0.mp4"), str(clips / "v" / "missing.mp4")]}).to_csv(mixed, index=False)
    pd.DataFrame({"path": [str(clips / "v" / "gone.mp4"), "nowhere/else.mp4"]}).to_csv(failed, index=False)
    extra = ["--model", "fake"] if stage == "caption" else []
    schemas = []
    for manifest in (mixed, failed):
        out = tmp_path / f"{manifest.stem}-{stage}.parquet"
        vidcap(stage, manifest, "-o", out, "--workers", "0", "-q", *extra, check=False)
        schemas.append(pq.read_schema(out).remove_metadata())
    assert schemas[0].equals(schemas[1]), (schemas[0], schemas[1])
    assert not [f.name for f in schemas[1] if str(f.type) == "null"]
