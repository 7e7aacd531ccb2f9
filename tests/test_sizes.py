"""The same rows give the same output whatever the manifest's size or format (issue 31).

Random cells in random columns, run through caption, motion and tag at sizes on both sides of the run
machinery's internal thresholds (rows per part, the feeder's chunk and light-row limits, the ledger's
Arrow batch): the output of the first rows of a large manifest equals the output of those rows alone, and a
CSV manifest gives the same CSV bytes, Parquet schema and cells as the same rows in Parquet. Most rows name
missing files (cheap, and each still a row with its status and error); the first few are real clips.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media import make_video

from vidcap.backends.base import CaptionOptions
from vidcap.backends.llm import make_chat_backend
from vidcap.backends.registry import resolve_model
from vidcap.feeder import LIGHT_ROWS, MAX_CHUNK
from vidcap.ledger import BATCH_ROWS
from vidcap.manifest import read_table
from vidcap.runner import RunOptions, run_stage
from vidcap.session import PART_ROWS
from vidcap.stages.caption import CaptionStage
from vidcap.stages.motion import MotionStage
from vidcap.stages.tag import TagStage

REAL = 3  # real clips at the head of every manifest
THRESHOLDS = sorted({PART_ROWS, MAX_CHUNK, LIGHT_ROWS, BATCH_ROWS})
SIZES = [n for t in THRESHOLDS for n in (t - 1, t + 1)]
RUN_LEVEL = ("near_dup_cluster", "near_dup_size")  # computed over the whole table: a subset may differ

CELL = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=30)
NAME = st.text(alphabet=string.ascii_lowercase + "_é", min_size=1, max_size=8).filter(
    lambda s: s not in {"path", "text", "status", "error"} and not s.startswith("_")
)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("sizes")
    return [str(make_video(root / f"real{i}.mp4", 12 + 4 * i, (64 + 16 * i, 48))) for i in range(REAL)]


def _manifest(n: int, clips: list[str], names: list[str], cells: list[str], root: Path) -> pa.Table:
    paths = clips + [str(root / "missing" / f"clip{i:06d}.mp4") for i in range(n - len(clips))]
    cols = {"path": paths}
    for j, name in enumerate(names):
        cols[name] = [cells[(i + j) % len(cells)] for i in range(n)]
    cols["text"] = [f"A {cells[i % len(cells)]} walks past a parked car number {i}." for i in range(n)]
    return pa.table(cols)


def _write(tbl: pa.Table, path: Path) -> Path:
    if path.suffix == ".csv":
        pcsv.write_csv(tbl, path, pcsv.WriteOptions(quoting_style="all_valid"))
    else:
        pq.write_table(tbl, path)
    return path


def _stage(kind: str):
    if kind == "caption":
        return CaptionStage(resolve_model("fake"), CaptionOptions())
    if kind == "motion":
        return MotionStage(0.25)
    return TagStage("objects", make_chat_backend("fake", None, None))


def _run(kind: str, manifest: Path, out: Path) -> Path:
    run_stage(_stage(kind), manifest, out, RunOptions(workers=0, progress=False))
    return out


def _frame(path: Path) -> pd.DataFrame:
    df = read_table(path, text=True) if path.suffix == ".csv" else pq.read_table(path).to_pandas()
    return df.drop(columns=[c for c in df.columns if c in RUN_LEVEL or c.startswith("run_")], errors="ignore")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["caption", "motion", "tag"])
@pytest.mark.parametrize("n", SIZES)
@settings(
    max_examples=1, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    names=st.lists(NAME, max_size=3, unique=True),
    cells=st.lists(CELL, min_size=1, max_size=6),
    head=st.integers(REAL, REAL + 5),
)
def test_same_rows_same_output_at_any_size_and_format(clips, tmp_path_factory, n, kind, names, cells, head):
    root = tmp_path_factory.mktemp("run")
    whole = _manifest(n, clips, names, cells, root)
    m_csv, m_pq = _write(whole, root / "m.csv"), _write(whole, root / "m.parquet")

    # one format in, two formats out: CSV bytes equal, Parquet schema and cells equal
    a_csv, b_csv = _run(kind, m_csv, root / "a.csv"), _run(kind, m_pq, root / "b.csv")
    assert a_csv.read_bytes() == b_csv.read_bytes()
    a_pq, b_pq = _run(kind, m_csv, root / "a.parquet"), _run(kind, m_pq, root / "b.parquet")
    ta, tb = pq.read_table(a_pq), pq.read_table(b_pq)
    assert ta.schema.remove_metadata() == tb.schema.remove_metadata()
    assert ta.num_rows == n and ta.to_pylist() == tb.to_pylist()

    # the first rows alone give the rows the whole manifest gave them
    sub = _run(kind, _write(whole.slice(0, head), root / "s.csv"), root / "s.csv.out.csv")
    got, want = _frame(sub), _frame(a_csv).head(head)
    assert got.columns.tolist() == want.columns.tolist()
    assert got.astype(str).values.tolist() == want.astype(str).values.tolist()
    assert (got["status"] == "ok").sum() == (REAL if kind != "tag" else head)


def test_sizes_straddle_every_threshold():
    """The drawn sizes sit on both sides of each threshold the run machinery has (guard against a renamed one)."""
    for t in THRESHOLDS:
        assert t - 1 in SIZES and t + 1 in SIZES
    assert os.environ.get("VIDCAP_STREAM_MIN_BYTES") is None
