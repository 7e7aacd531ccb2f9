"""The streaming ledger (large manifests: DuckDB plan, resume and merge) against the pandas path it replaces
for large runs, on random manifests; part compaction keeps every folder under its cap."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media import make_video

from vidcap.manifest import RID, read_table, write_table

pytest.importorskip("duckdb")

KEYS = ["path", "note", "text", "flags", "status", "error"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ledger")
    (root / "v").mkdir()
    for i in range(3):
        make_video(root / "v" / f"c{i}.mp4", 8, (64, 48))
    make_video(root / "v" / "é clip.mp4", 8, (64, 48))
    return root


def cells(root: Path) -> list[str]:
    """Path cells of every shape the runs resolve: relative, absolute, ./ and // forms, spaces, unicode,
    empty, missing files, URLs, ~."""
    return [
        "v/c0.mp4",
        str(root / "v" / "c1.mp4"),
        "./v/c2.mp4",
        "v//c0.mp4",
        " v/c1.mp4 ",
        "v/é clip.mp4",
        "",
        "v/missing.mp4",
        "v/../v/c2.mp4",
        "~/vidcap-no-such-file.mp4",
        "/nonexistent/x.mp4",
        "http://example.invalid/a.mp4",
        "v/c0.mp4/",
    ]


NOTE = st.text(alphabet=st.sampled_from(list("ab ,\"'\r\nÅé中-")), max_size=6)
ROWS = st.lists(st.tuples(st.integers(0, 12), NOTE), min_size=1, max_size=25)


def write_manifest(root: Path, rows, name: str, fmt: str) -> Path:
    pool = cells(root)
    df = pd.DataFrame({"path": [pool[i] for i, _ in rows], "note": [n for _, n in rows]}, dtype=object)
    path = root / f"{name}{fmt}"
    write_table(df, path)
    return path


def run(manifest: Path, out: Path, large: bool, monkeypatch, **kw) -> dict:
    from vidcap.backends.base import CaptionOptions
    from vidcap.backends.registry import resolve_model
    from vidcap.runner import RunOptions, run_stage
    from vidcap.stages.caption import CaptionStage

    monkeypatch.setenv("VIDCAP_STREAM_MIN_BYTES", "0" if large else str(2**40))
    stage = CaptionStage(resolve_model("fake"), CaptionOptions(num_frames=2))
    summary = run_stage(stage, manifest, out, RunOptions(workers=0, progress=False, **kw))
    assert "ledger" in summary  # one bookkeeping path, whatever the size
    return summary


def table(path: Path) -> pd.DataFrame:
    df = read_table(path)
    return df[[c for c in KEYS if c in df.columns]].astype(object).where(df.notna(), "").astype(str)


SETTINGS = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@SETTINGS
@given(rows=ROWS, fmt=st.sampled_from([".csv", ".parquet"]))
def test_streaming_output_matches_the_pandas_path(clips, tmp_path_factory, monkeypatch, rows, fmt):
    """Duplicates, empty and odd paths, unicode and CSV-hostile notes: the same rows, order, results."""
    work = tmp_path_factory.mktemp("same")
    manifest = write_manifest(clips, rows, f"m{random.randrange(1 << 30)}", fmt)
    small, large = (
        run(manifest, work / f"s{fmt}", False, monkeypatch),
        run(manifest, work / f"l{fmt}", True, monkeypatch),
    )
    a, b = table(work / f"s{fmt}"), table(work / f"l{fmt}")
    assert len(b) == len(rows)
    pd.testing.assert_frame_equal(a, b)
    for key in ("rows", "unique", "duplicates", "skipped", "processed", "ok", "failed", "flags"):
        assert small[key] == large[key], key


@SETTINGS
@given(first=ROWS, more=ROWS, seed=st.integers(0, 1000), fmt=st.sampled_from([".csv", ".parquet"]))
def test_resume_after_reorder_and_append(clips, tmp_path_factory, monkeypatch, first, more, seed, fmt):
    """A finished output, then the manifest re-sorted with rows appended: only new ids are processed and the
    output equals a fresh run over the new manifest."""
    work = tmp_path_factory.mktemp("resume")
    m1 = write_manifest(clips, first, f"a{random.randrange(1 << 30)}", fmt)
    out = work / f"o{fmt}"
    run(m1, out, True, monkeypatch)
    rows2 = first + more
    random.Random(seed).shuffle(rows2)
    m2 = write_manifest(clips, rows2, f"b{random.randrange(1 << 30)}", fmt)
    resumed = run(m2, out, True, monkeypatch)
    fresh = run(m2, work / f"f{fmt}", False, monkeypatch)
    pd.testing.assert_frame_equal(table(out), table(work / f"f{fmt}"))
    assert resumed["processed"] + resumed["skipped"] == fresh["unique"]
    # every file the first run captioned is skipped (failed rows are retried; ./, // and .. forms share an id)
    named = [c if os.path.isabs(c) else f"{clips}/{c}" for c in (cells(clips)[i] for i, _ in first) if c]
    files = {os.path.realpath(p) for p in named if os.path.isfile(p)}  # "x.mp4/" is not a file
    assert resumed["skipped"] >= len(files)


@pytest.mark.parametrize("large", [False, True])
def test_parts_folders_stay_under_the_cap(tmp_path, monkeypatch, large):
    """Thousands of one-row parts: compaction keeps every folder of the parts tree under the cap (lowered
    here to 10 files), and the output has exactly one row per manifest row, in order."""
    from vidcap import parts

    monkeypatch.setattr(parts, "FILES_PER_DIR", 10)
    monkeypatch.setenv("VIDCAP_COMPACT_PARTS", "20")
    n = 1500
    manifest = tmp_path / "m.csv"
    pd.DataFrame(
        {"path": [f"/nonexistent/v{i}.mp4" for i in range(n)] + ["/nonexistent/v7.mp4"], "i": range(n + 1)}
    ).to_csv(manifest, index=False)
    out = tmp_path / "o.parquet"
    summary = run(manifest, out, large, monkeypatch, part_rows=1, keep_parts=True)
    folders = [p for p in out.with_name(out.name + ".parts").rglob("*") if p.is_dir()]
    folders.append(out.with_name(out.name + ".parts"))
    biggest = max(sum(1 for _ in f.iterdir()) for f in folders)
    assert biggest <= 20 + 5, biggest  # fresh parts (< VIDCAP_COMPACT_PARTS) plus run.json, LOCK, ledger
    assert any(f.parent.name == "w0" and f.name == "0002" for f in folders)  # a third subfolder began
    got = read_table(out)
    assert got["i"].astype(int).tolist() == list(range(n + 1)) and summary["duplicates"] == 1
    assert summary["processed"] == n and (got["error"].str.startswith("missing")).all()


def test_a_part_lost_before_the_merge_is_redone(tmp_path, monkeypatch):
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [f"/nonexistent/v{i}.mp4" for i in range(300)]}).to_csv(manifest, index=False)
    monkeypatch.setenv("VIDCAP_TEST_FAULT", "before_merge:unlink")
    summary = run(manifest, tmp_path / "o.csv", True, monkeypatch, part_rows=7)
    assert summary["processed"] > 300 and summary["failed"] == {"missing": 300}
    assert len(read_table(tmp_path / "o.csv")) == 300


def test_large_manifest_errors_are_one_sentence(tmp_path, monkeypatch):
    from vidcap.errors import UsageError

    bad = tmp_path / "m.csv"
    bad.write_bytes(b"path,x\n\xff\xfe,1\n")
    for body, words in [
        (b"", "empty"),
        (b"file,x\na,1\n", "no 'path' column"),
        (b"path,x\n", "no rows"),
        (f"path,{RID}\na,1\n".encode(), "keeps for itself"),
    ]:
        bad.write_bytes(body)
        with pytest.raises(UsageError, match=words):
            run(bad, tmp_path / "o.csv", True, monkeypatch)
        assert not (tmp_path / "o.csv.parts").exists()


def test_a_replaced_file_is_redone_and_removed_rows_do_not_count(clips, tmp_path, monkeypatch):
    import shutil

    from media import make_video

    for i in range(3):
        shutil.copy(clips / "v" / f"c{i}.mp4", tmp_path / f"c{i}.mp4")
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": ["c0.mp4", "c1.mp4", "c2.mp4"]}).to_csv(manifest, index=False)
    out = tmp_path / "o.parquet"
    assert run(manifest, out, True, monkeypatch)["processed"] == 3
    make_video(tmp_path / "c1.mp4", 12, (80, 48))  # other content at the same path
    pd.DataFrame({"path": ["c0.mp4", "c1.mp4"]}).to_csv(manifest, index=False)
    again = run(manifest, out, True, monkeypatch)
    assert again["processed"] == 1 and again["skipped"] == 1 and again["ok"] == 2
    got = read_table(out)
    assert len(got) == 2 and got.loc[1, "width"] == 80


@pytest.mark.parametrize("fmt", [".csv", ".parquet"])
def test_failed_out_and_output_elsewhere_match_the_pandas_path(clips, tmp_path, monkeypatch, fmt):
    """--failed-out splits the rows the same way, and relative paths are written absolute when the output
    lives in another folder, as on the pandas path."""
    rows = [(i, f"n{i}") for i in range(13)]
    manifest = write_manifest(clips, rows, f"f{random.randrange(1 << 30)}", fmt)
    got = {}
    for large in (False, True):
        out, bad = tmp_path / f"{large}" / f"o{fmt}", tmp_path / f"{large}" / f"bad{fmt}"
        got[large] = run(manifest, out, large, monkeypatch, failed_out=str(bad))
        got[large, "out"], got[large, "bad"] = table(out), table(bad)
    for part in ("out", "bad"):
        pd.testing.assert_frame_equal(got[False, part], got[True, part])
    assert len(got[True, "out"]) + len(got[True, "bad"]) == len(rows)
    assert got[True, "out"]["path"].str.startswith("/").all()


def test_awkward_column_names_match_the_pandas_path(clips, tmp_path, monkeypatch):
    """Input columns named like result columns, with quotes, unicode or vidcap's old internal names."""
    names = ["text", "status", 'a"b', "légende", "_rid", "error_input", "flags"]
    df = pd.DataFrame({"path": cells(clips)[:6], **{n: [f"{n} {i}" for i in range(6)] for n in names}})
    manifest = tmp_path / "m.csv"
    df.to_csv(manifest, index=False)
    outs = []
    for large in (False, True):
        out = tmp_path / f"o{large}.csv"
        run(manifest, out, large, monkeypatch)
        got = read_table(out)
        near = [c for c in got.columns if c.startswith("near_dup_")]  # whole-table clustering: pandas path only
        outs.append(got.astype(object).where(got.notna(), "").astype(str).drop(columns=["file_mtime", *near]))
    assert list(outs[0].columns) == list(outs[1].columns)
    pd.testing.assert_frame_equal(outs[0], outs[1])


def test_tags_keyed_by_path_and_caption(clips, tmp_path, monkeypatch):
    """The tag stage's own key (path and caption) on the ledger path: the same tags as the pandas path, a
    rerun over the finished output skips every row, an edited caption is tagged again."""
    from vidcap.backends.llm import make_chat_backend
    from vidcap.runner import RunOptions, run_stage
    from vidcap.stages.tag import TagStage

    captions = tmp_path / "c.csv"
    run(write_manifest(clips, [(i, "x") for i in range(8)], "tm", ".csv"), captions, False, monkeypatch)

    def tag(src, out, large):
        monkeypatch.setenv("VIDCAP_STREAM_MIN_BYTES", "0" if large else str(2**40))
        stage = TagStage("objects", make_chat_backend("fake"))
        return run_stage(stage, src, out, RunOptions(workers=0, progress=False))

    tag(captions, tmp_path / "small.csv", False)
    first = tag(captions, tmp_path / "large.csv", True)
    cols = ["path", "text", "objects", "status"]
    a, b = read_table(tmp_path / "small.csv")[cols], read_table(tmp_path / "large.csv")[cols]
    pd.testing.assert_frame_equal(a.astype(str), b.astype(str))
    assert tag(captions, tmp_path / "large.csv", True)["skipped"] == first["unique"]
    edited = read_table(captions)
    edited.loc[0, "text"] = "another caption entirely"
    edited.to_csv(captions, index=False)
    assert tag(captions, tmp_path / "large.csv", True)["processed"] == 1


@pytest.mark.parametrize("large", ["0", str(2**40)])
def test_a_kill_during_compaction_loses_and_repeats_nothing(tmp_path, large):
    """SIGKILL with a compacted part's temp file written: the rerun finishes with every row exactly once."""
    import signal

    from clirun import vidcap

    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [f"/nonexistent/v{i}.mp4" for i in range(60)]}).to_csv(manifest, index=False)
    out = tmp_path / "o.csv"
    args = ["caption", manifest, "-o", out, "--model", "fake", "-q", "--workers", "0", "--part-rows", "2"]
    knobs = {"VIDCAP_COMPACT_PARTS": "4", "VIDCAP_STREAM_MIN_BYTES": large}
    proc = vidcap(*args, check=False, VIDCAP_TEST_FAULT="compact:kill:2", **knobs)
    assert proc.returncode == -signal.SIGKILL
    done = vidcap(*args, check=False, **knobs)
    assert done.returncode == 1 and "every row failed (60)" in done.stderr  # missing files, as meant
    got = read_table(out)
    assert got["path"].tolist() == [f"/nonexistent/v{i}.mp4" for i in range(60)]
    assert "skipped (already done)" in done.stderr and "0 skipped" not in done.stderr


LOOKS_TYPED = [
    "007",
    "1e3",
    "NA",
    "N/A",
    "#N/A",
    "null",
    "None",
    "nan",
    "-0",
    " 1 ",
    "True",
    "3.10",
    "",
    "1,5",
    '"q"',
    "a\rb",
    "x\ny",
    "é",
]
CELL = st.one_of(st.sampled_from(LOOKS_TYPED), NOTE)


def csv_cells(path: Path) -> tuple[list[list[str]], bytes]:
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh)), path.read_bytes()


def csv_bytes(rows: list[list[str]]) -> bytes:
    """The cells as the pandas path's writer writes them (Python's csv, minimal quoting, CRLF)."""
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
    return buf.getvalue().encode("utf-8")


@SETTINGS
@given(rows=st.lists(st.tuples(st.integers(0, 12), CELL, CELL), min_size=1, max_size=12))
def test_csv_manifest_cells_and_csv_bytes_are_the_same_on_both_paths(clips, tmp_path_factory, monkeypatch, rows):
    """A CSV manifest's cells stay text on both paths ("007", "NA", "1e3" come back as given, in a Parquet
    output too), and a CSV output is the same bytes (CRLF line ends, the same quoting) on both paths."""
    import pyarrow.parquet as pq

    work = tmp_path_factory.mktemp("cells")
    pool = cells(clips)
    manifest = work / "m.csv"
    body = [["path", "a", "b"], *[[pool[i], a, b] for i, a, b in rows]]
    manifest.write_bytes(csv_bytes(body))
    got = {}
    for large in (False, True):
        for fmt in (".csv", ".parquet"):
            run(manifest, work / f"o{large}{fmt}", large, monkeypatch)
        got[large, "csv"] = csv_cells(work / f"o{large}.csv")
        got[large, "pq"] = pq.read_table(work / f"o{large}.parquet", columns=["path", "a", "b"]).to_pylist()
    want = [{"path": p or None, "a": a or None, "b": b or None} for p, a, b in body[1:]]
    assert got[False, "pq"] == got[True, "pq"] == want  # only an empty cell is missing
    (small, small_raw), (large, large_raw) = got[False, "csv"], got[True, "csv"]
    assert small == large and [r[1:3] for r in large[1:]] == [[a, b] for _, a, b in rows]
    assert csv_bytes(large) == large_raw and csv_bytes(small) == small_raw
