"""One table contract (`vidcap.tables`): CSV cells stay text unless vidcap wrote the column, Parquet keeps its
types, and `merge`, `join`, `diff` and `export` keep cells exactly on every mix of CSV, Parquet and dataset
folders (run through the CLI on real small clips)."""

from __future__ import annotations

import itertools
import string

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from clirun import vidcap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media import make_video

from vidcap import tables
from vidcap.table_ops import diff, merge, selected_sample

KINDS = {"csv": "{}.csv", "parquet": "{}.parquet", "dataset": "{}_ds"}
IDS = ["007", "NA", "1e3", "", "  x  "]  # what pandas' type guessing would turn into 7, NaN, 1000.0, ...


def text_cells(table) -> pd.DataFrame:
    """A CSV read with no type guessing at all: what a user sees in the file."""
    return pd.read_csv(table, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """A manifest of 4 clips and a missing file, with a caption and a motion output in each kind of table."""
    root = tmp_path_factory.mktemp("tables")
    (root / "v").mkdir()
    paths = [str(make_video(root / "v" / f"c{i}.mp4", 24, (96, 64))) for i in range(4)] + [str(root / "v" / "gone.mp4")]
    pd.DataFrame({"path": paths, "id": IDS}).to_csv(root / "m.csv", index=False)
    out = {}
    for kind, pattern in KINDS.items():
        cap, cm = root / pattern.format("cap"), root / pattern.format("cm")
        vidcap("caption", root / "m.csv", "-o", cap, "--model", "fake", "--workers", "0", "-q")
        vidcap("motion", root / "m.csv", "-o", cm, "--workers", "0", "-q")
        out[kind] = (cap, cm)
    return root, out


def test_reading_follows_the_contract(outputs):
    _, out = outputs
    csv_cap = tables.read(out["csv"][0])
    assert csv_cap["id"].tolist()[:3] == ["007", "NA", "1e3"]  # the user's column: text
    assert str(csv_cap["num_frames"].dtype) == "Int64"  # vidcap wrote it (its sidecar says so)
    assert csv_cap["num_frames"].tolist()[:4] == [24] * 4 and csv_cap["num_frames"].isna().tolist()[4]
    for kind in ("parquet", "dataset"):
        df = tables.read(out[kind][0])
        assert str(df["num_frames"].dtype) == "Int64" and df["id"].tolist()[:3] == ["007", "NA", "1e3"]
    assert tables.count_rows(out["csv"][0]) == tables.count_rows(out["dataset"][0]) == 5
    assert [len(b) for b in tables.batches(out["csv"][0], rows=2)] == [2, 2, 1]


@pytest.mark.parametrize(("a", "b"), list(itertools.product(KINDS, KINDS)))
def test_join_and_export_on_every_pair_of_kinds(outputs, a, b):
    root, out = outputs
    cap, cm = out[a][0], out[b][1]
    joined = root / f"j_{a}_{b}.csv"
    vidcap("join", cap, cm, "-o", joined)
    got = text_cells(joined)
    assert got["id"].tolist() == IDS
    assert got["num_frames"].tolist() == ["24"] * 4 + [""]  # not 24.0
    assert not [c for c in got.columns if c.startswith(("id_", "num_frames_", "path_"))], list(got.columns)
    assert {"caption_status", "motion_status", "cmotion", "text"} <= set(got.columns)
    train = root / f"t_{a}_{b}.csv"
    vidcap("export", cap, cm, "--to", "opensora", "-o", train, "--unclassified", "static")
    exported = text_cells(train)
    assert len(exported) == 4 and exported["id"].tolist() == IDS[:4]
    assert exported["num_frames"].tolist() == ["24"] * 4
    parquet_join = root / f"j_{a}_{b}.parquet"
    vidcap("join", cap, cm, "-o", parquet_join)
    schema = pq.read_schema(parquet_join)
    assert str(schema.field("num_frames").type) == "int64" and str(schema.field("motion_dx").type) == "double"


def test_merge_and_diff_keep_cells_and_types(outputs):
    root, out = outputs
    merged = root / "merged.csv"
    proc = vidcap("merge", out["csv"][0], out["parquet"][0], "-o", merged)
    assert "5 rows dropped" in proc.stdout
    got = text_cells(merged)
    assert got["id"].tolist() == IDS and got["num_frames"].tolist() == ["24"] * 4 + [""]
    pmerged = root / "merged.parquet"
    vidcap("merge", out["dataset"][0], out["csv"][1], "-o", pmerged)
    schema = pq.read_schema(pmerged)
    assert str(schema.field("num_frames").type) == "int64" and str(schema.field("id").type) == "string"
    assert pd.read_parquet(pmerged)["id"].tolist()[:3] == ["007", "NA", "1e3"]
    pd.DataFrame({"path": ["v/c0.mp4", "./v/../v/c2.mp4"]}).to_csv(root / "done.csv", index=False)
    left = root / "left.csv"
    vidcap("diff", out["csv"][0], root / "done.csv", "-o", left)
    got = text_cells(left)
    assert [p.rsplit("/", 1)[-1] for p in got["path"]] == ["c1.mp4", "c3.mp4", "gone.mp4"]
    assert got["id"].tolist() == ["NA", "", "  x  "] and got["num_frames"].tolist() == ["24", "24", ""]


@pytest.mark.parametrize(("a", "b"), list(itertools.product(KINDS, KINDS)))
def test_merge_and_diff_on_every_pair_of_kinds(outputs, tmp_path, a, b):
    _, out = outputs
    cap, cm = out[a][0], out[b][1]
    n, dropped = merge([cm, cap], tmp_path / "m.parquet")  # later parts win: the caption rows
    got = tables.read(tmp_path / "m.parquet")
    assert (n, dropped) == (5, 5) and got["id"].tolist()[:3] == ["007", "NA", "1e3"]
    assert str(got["num_frames"].dtype) == "Int64" and got["num_frames"].tolist()[:4] == [24] * 4
    assert diff(cap, cm, tmp_path / "d.csv") == 0
    assert text_cells(tmp_path / "d.csv").columns.tolist() == tables.columns(cap)


def test_declared_types_cover_the_stages_and_arrow_batches_follow_them(outputs):
    from vidcap.parts import FILE_DTYPES
    from vidcap.stages.caption import CaptionStage

    for col, dtype in {**CaptionStage.dtypes, **FILE_DTYPES}.items():  # a list column is JSON text in a CSV
        assert dtype.startswith("list[") or tables.DTYPES[col] == dtype, col
    _, out = outputs
    for kind in KINDS:
        got = pa.Table.from_batches(list(tables.record_batches(out[kind][0])))
        assert got.num_rows == 5 and str(got.schema.field("num_frames").type) == "int64"
        assert got.column("id").to_pylist() == ["007", "NA", "1e3", None, "  x  "]  # an empty CSV cell: missing


def test_estimate_sample_streams_shard_and_limit(outputs, tmp_path):
    _, out = outputs
    count, sample = selected_sample(out["parquet"][0], shard=(1, 2), limit=None, rows=1)
    assert count == 2 and len(sample) == 1 and sample["path"].str.endswith("c1.mp4").all()
    count, sample = selected_sample(out["csv"][0], limit=3)
    assert count == 3 and len(sample) == 3 and sample["_vidcap_abspath"].str.startswith("/").all()


CELL = st.one_of(
    st.sampled_from(["007", "NA", "N/A", "1e3", "nan", "None", "-0", "0x1A", "TRUE", " ", "[1, 2]", "€", "a,b", '"q"']),
    st.text(string.printable + "é\u00a0\u2028", max_size=12),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cells=st.lists(st.lists(CELL, min_size=2, max_size=2), min_size=1, max_size=6))
def test_any_cell_survives_merge_in_every_format(tmp_path, cells):
    """Random strings (NA tokens, numbers in any spelling, newlines, quotes) come back byte for byte from a
    CSV or Parquet through merge, and an integer column with gaps stays an integer."""
    df = pd.DataFrame({"path": [f"clip{i}.mp4" for i in range(len(cells))], "a": [c[0] for c in cells]})
    df["b"] = [c[1] for c in cells]
    df["n"] = pd.array([i if i % 2 else None for i in range(len(cells))], dtype="Int64")
    expected = [None if v == "" else v for v in df["a"]]  # CSV: only an empty cell is missing
    for fmt in ("csv", "parquet"):
        src, out = tmp_path / f"in.{fmt}", tmp_path / f"out.{fmt}"
        tables.write(df, src)
        merge([src], out)
        got = tables.read(out)
        cells_a = [None if pd.isna(v) else v for v in got["a"]]
        assert cells_a == (expected if fmt == "csv" else df["a"].tolist())
        if fmt == "parquet":
            assert str(got["n"].dtype) == "Int64" and got["n"].isna().tolist() == df["n"].isna().tolist()
        else:
            assert [None if pd.isna(v) else v for v in got["n"]] == [None if pd.isna(v) else str(v) for v in df["n"]]


@settings(max_examples=40, deadline=None)
@given(a=st.lists(CELL, min_size=3, max_size=3), b=st.lists(CELL, min_size=3, max_size=3))
def test_same_cells_compares_as_written(a, b):
    left, right = pd.Series(a, dtype=object), pd.Series(b, dtype=object)
    assert tables.same_cells(left, right) == (a == b)
    assert tables.same_cells(pd.Series([1, None], dtype="Int64"), pd.Series(["1", None], dtype=object))
    assert not tables.same_cells(pd.Series([7], dtype="Int64"), pd.Series(["007"], dtype=object))
