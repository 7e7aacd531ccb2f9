"""Parquet dataset outputs (`-o DIR/`): the same rows as a single file on both run paths, resume over them,
every reader takes them, an unfinished one is refused, and a kill while writing one leaves the old output
or none."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from clirun import VIDCAP, cli_env, vidcap
from hypothesis import given
from hypothesis import strategies as st
from media import make_video
from test_ledger import ROWS, SETTINGS, run, table, write_manifest

from vidcap import dataset
from vidcap.errors import UsageError
from vidcap.manifest import read_table

pytest.importorskip("duckdb")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dsclips")
    (root / "v").mkdir()
    for i in range(3):
        make_video(root / "v" / f"c{i}.mp4", 8, (64, 48))
    make_video(root / "v" / "é clip.mp4", 8, (64, 48))
    return root


def caption_manifest(root: Path, n: int, name: str = "m.csv") -> Path:
    """n rows over the clips (ok rows) and a missing file (failed rows)."""
    pool = ["v/c0.mp4", "v/c1.mp4", "v/c2.mp4", "v/é clip.mp4", "v/missing.mp4"]
    df = pd.DataFrame(
        {"path": [pool[i % 5] if i < 5 else f"v/x{i}.mp4" for i in range(n)], "id": [f"{i:04d}" for i in range(n)]}
    )
    path = root / name
    df.to_csv(path, index=False)
    return path


def parts_of(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@SETTINGS
@given(rows=ROWS, fmt=st.sampled_from([".csv", ".parquet"]), per_file=st.integers(1, 7), large=st.booleans())
def test_dataset_equals_single_file(clips, tmp_path_factory, monkeypatch, rows, fmt, per_file, large):
    """Row for row the same table as a .parquet output, on the path asked for; parts of at most per_file
    rows in manifest order; a rerun over it is a no-op that leaves it as it was."""
    monkeypatch.setenv(dataset.ROWS_ENV, str(per_file))
    work = tmp_path_factory.mktemp("ds")
    manifest = write_manifest(clips, rows, f"m{random.randrange(1 << 30)}", fmt)
    one = run(manifest, work / "one.parquet", large, monkeypatch)
    run(manifest, work / "many", large, monkeypatch)
    pd.testing.assert_frame_equal(read_table(work / "one.parquet"), read_table(work / "many"))
    meta = dataset.marker(work / "many")
    assert meta["rows"] == len(rows) and all(0 < f["rows"] <= per_file for f in meta["files"])
    assert [f["name"] for f in meta["files"]] == [f"part-{i:05d}.parquet" for i in range(len(meta["files"]))]
    assert meta["fingerprint"] and meta["summary"]["ok"] == one["ok"]
    assert parts_of(work / "many") == sorted([dataset.MARKER, *(f["name"] for f in meta["files"])])
    assert not list(work.glob(".many.*")) and not (work / "many.parts").exists()
    again, again_one = (
        run(manifest, work / "many", large, monkeypatch),
        run(manifest, work / "one.parquet", large, monkeypatch),
    )
    assert again["processed"] == again_one["processed"]  # 0, but for retryable errors (the URL row's)
    pd.testing.assert_frame_equal(table(work / "one.parquet"), table(work / "many"))


@pytest.mark.parametrize("large", [False, True])
def test_resume_over_a_dataset_with_new_rows(clips, tmp_path, monkeypatch, large):
    """Rows appended to the manifest: only they are processed, the result equals a fresh run."""
    monkeypatch.setenv(dataset.ROWS_ENV, "3")
    m1 = caption_manifest(clips, 7, f"r{large}1.csv")
    run(m1, tmp_path / "out", large, monkeypatch)
    m2 = caption_manifest(clips, 12, f"r{large}2.csv")
    resumed = run(m2, tmp_path / "out", large, monkeypatch)
    assert resumed["processed"] == 5
    run(m2, tmp_path / "fresh", large, monkeypatch)
    pd.testing.assert_frame_equal(table(tmp_path / "out"), table(tmp_path / "fresh"))


def test_every_reader_takes_a_dataset(clips, tmp_path):
    """join, export --to opensora, report, diff, merge, tag (its manifest a caption dataset) and tag-stats,
    and the default output of a stage run over a dataset is a dataset beside it."""
    manifest = caption_manifest(clips, 9)
    env = {dataset.ROWS_ENV: "2"}
    vidcap("caption", manifest, "-o", clips / "cap/", "--model", "fake", "-q", "--workers", "0", check=False, **env)
    vidcap("caption", manifest, "-o", clips / "cap.csv", "--model", "fake", "-q", "--workers", "0", check=False)
    vidcap("motion", manifest, "-o", clips / "mot", "-q", "--workers", "0", check=False, **env)
    assert len(dataset.files(clips / "cap")) == 5
    vidcap("join", clips / "cap", clips / "mot", "-o", tmp_path / "joined.csv")
    joined = read_table(tmp_path / "joined.csv")
    assert len(joined) == 9 and {"caption_status", "motion_status", "cmotion", "text"} <= set(joined.columns)
    vidcap(
        "export",
        clips / "cap",
        clips / "mot",
        "--to",
        "opensora",
        "-o",
        tmp_path / "os.csv",
        "--unclassified",
        "static",
    )
    assert len(read_table(tmp_path / "os.csv")) == 4  # the four clips; the missing files are excluded
    vidcap("report", clips / "cap", "-o", tmp_path / "r.html")
    assert (tmp_path / "r.html").stat().st_size > 0
    vidcap("diff", manifest, clips / "cap", "-o", tmp_path / "left.csv")
    assert len(read_table(tmp_path / "left.csv")) == 0
    vidcap("merge", clips / "cap", clips / "cap.csv", "-o", tmp_path / "merged")
    merged = read_table(tmp_path / "merged")  # later tables win on a path: the CSV's rows, in its order
    assert merged["path"].tolist() == read_table(clips / "cap.csv")["path"].tolist()
    vidcap("tag", clips / "cap", "--key", "objects", "--backend", "fake", "-q", check=False, **env)
    tagged = clips / "cap_objects"
    assert dataset.marker(tagged)["rows"] == 9
    assert read_table(tagged)["text"].tolist() == read_table(clips / "cap.csv")["text"].tolist()
    stats = vidcap("tag-stats", tagged, "--key", "objects")
    assert "objects" in stats.stdout


def test_an_incomplete_dataset_is_refused_in_one_sentence(clips, tmp_path):
    manifest = caption_manifest(clips, 5, "inc.csv")
    vidcap(
        "caption",
        manifest,
        "-o",
        tmp_path / "cap",
        "--model",
        "fake",
        "-q",
        "--workers",
        "0",
        check=False,
        **{dataset.ROWS_ENV: "2"},
    )
    (tmp_path / "cap" / "part-00001.parquet").unlink()
    with pytest.raises(UsageError, match=r"incomplete output .*part-00001.parquet is missing.*rerun"):
        read_table(tmp_path / "cap")
    (tmp_path / "cap" / dataset.MARKER).unlink()
    for args in (
        ("join", tmp_path / "cap", manifest, "-o", tmp_path / "j.csv"),
        ("tag", tmp_path / "cap", "--key", "objects", "--backend", "fake", "-q"),
        ("report", tmp_path / "cap"),
    ):
        proc = vidcap(*args, check=False)
        assert proc.returncode == 2, proc.stderr
        err = proc.stderr.strip()
        assert err.count("\n") == 0 and "incomplete output" in err and "rerun" in err and "Traceback" not in err
    # a folder vidcap did not write is never replaced, even with --overwrite
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    proc = vidcap("caption", manifest, "-o", tmp_path / "mine", "--model", "fake", "--overwrite", check=False)
    assert proc.returncode == 2 and "not a vidcap dataset" in proc.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def _kill_run(manifest: Path, out: Path, large: bool, n: int) -> subprocess.CompletedProcess:
    env = cli_env(
        VIDCAP_TEST_FAULT=f"dataset_part:kill:{n}", VIDCAP_DATASET_ROWS=2, VIDCAP_STREAM_MIN_BYTES=0 if large else 2**40
    )
    return subprocess.run(
        [*VIDCAP, "caption", manifest, "-o", out, "--model", "fake", "-q", "--workers", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("large", [False, True])
def test_a_kill_between_parts_leaves_the_old_output_or_none(clips, tmp_path, large):
    manifest = caption_manifest(clips, 9, f"k{large}.csv")
    out = tmp_path / "out"
    proc = _kill_run(manifest, out, large, 2)
    assert proc.returncode == -9, proc.stderr
    assert not out.exists()  # no half dataset: only a hidden temporary folder, which no reader takes
    env = {dataset.ROWS_ENV: 2, "VIDCAP_STREAM_MIN_BYTES": 0 if large else 2**40}
    vidcap("caption", manifest, "-o", out, "--model", "fake", "-q", "--workers", "0", check=False, **env)
    first = read_table(out)
    assert len(first) == 9 and first["id"].tolist() == [f"{i:04d}" for i in range(9)]
    assert not list(tmp_path.glob(".out.*"))
    # more rows, killed while the new dataset is written: the old one stays whole where it was
    more = caption_manifest(clips, 13, f"k{large}b.csv")
    proc = _kill_run(more, out, large, 3)
    assert proc.returncode == -9, proc.stderr
    pd.testing.assert_frame_equal(read_table(out), first)
    vidcap("caption", more, "-o", out, "--model", "fake", "-q", "--workers", "0", check=False, **env)
    assert read_table(out)["id"].tolist() == [f"{i:04d}" for i in range(13)]


def test_a_dataset_moved_aside_by_a_killed_run_is_put_back(clips, tmp_path, monkeypatch):
    """A kill between moving the old dataset aside and renaming the new one in: the next run of that
    output puts the old one back before it plans (so its rows count as done)."""
    monkeypatch.setenv(dataset.ROWS_ENV, "2")
    manifest = caption_manifest(clips, 6, "aside.csv")
    first = run(manifest, tmp_path / "out", False, monkeypatch)
    before = read_table(tmp_path / "out")
    (tmp_path / "out").rename(tmp_path / ".out.0badc0de.old")
    shutil.copytree(tmp_path / ".out.0badc0de.old", tmp_path / ".out.k3j4h5g6.tmp")  # the new one, unfinished
    again = run(manifest, tmp_path / "out", False, monkeypatch)
    assert again["processed"] == 0 and again["skipped"] == first["unique"]
    pd.testing.assert_frame_equal(read_table(tmp_path / "out"), before)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []


def test_outputs_are_readable_by_other_tools(clips, tmp_path, monkeypatch):
    """pyarrow.dataset, pandas and DuckDB read the folder as one table (the marker is not data)."""
    import duckdb
    import pyarrow.dataset as pads

    monkeypatch.setenv(dataset.ROWS_ENV, "4")
    manifest = caption_manifest(clips, 10, "other.csv")
    run(manifest, tmp_path / "out", True, monkeypatch)
    ours = read_table(tmp_path / "out")
    assert pads.dataset(tmp_path / "out").to_table().num_rows == 10
    assert pd.read_parquet(tmp_path / "out").shape == ours.shape
    got = duckdb.sql(f"SELECT id FROM read_parquet('{tmp_path / 'out'}/*.parquet')").fetchall()
    assert sorted(r[0] for r in got) == ours["id"].tolist()
    meta = json.loads((tmp_path / "out" / dataset.MARKER).read_text())
    assert [c["name"] for c in meta["columns"]] == list(ours.columns)


def test_a_dataset_as_manifest_on_both_paths(clips, tmp_path, monkeypatch):
    """A caption dataset of many parts as the manifest of caption and tag runs: both paths read its parts in
    order (DuckDB's read_parquet over the marker's list, Arrow batches for the tag stage's own key), give the
    same table, and a rerun over each dataset output skips every row."""
    from vidcap.backends.llm import make_chat_backend
    from vidcap.runner import RunOptions, run_stage
    from vidcap.stages.tag import TagStage

    monkeypatch.setenv(dataset.ROWS_ENV, "2")
    captions = tmp_path / "cap"
    run(caption_manifest(clips, 11, "asm.csv"), captions, False, monkeypatch)
    assert len(dataset.files(captions)) == 6

    def tag(out, large):
        monkeypatch.setenv("VIDCAP_STREAM_MIN_BYTES", "0" if large else str(2**40))
        stage = TagStage("objects", make_chat_backend("fake"))
        return run_stage(stage, captions, out, RunOptions(workers=0, progress=False))

    for large in (False, True):
        run(captions, tmp_path / f"again{large}", large, monkeypatch)
        assert run(captions, tmp_path / f"again{large}", large, monkeypatch)["processed"] == 0
        tag(tmp_path / f"tags{large}", large)
        assert tag(tmp_path / f"tags{large}", large)["processed"] == 0
    ids = [f"{i:04d}" for i in range(11)]
    for name in ("again", "tags"):
        a, b = read_table(tmp_path / f"{name}False"), read_table(tmp_path / f"{name}True")
        assert a["id"].tolist() == b["id"].tolist() == ids
        cols = [c for c in ("path", "id", "text_input", "objects", "status", "error") if c in a.columns]
        pd.testing.assert_frame_equal(a[cols].astype(str), b[cols].astype(str))


@given(sizes=st.lists(st.integers(0, 40), max_size=10), limit=st.integers(1, 60), group=st.integers(1, 25))
def test_row_groups_keep_order_and_never_cross_a_part(sizes, limit, group):
    """Reader batches regrouped for the Parquet writer: every row once, in order, groups of at most GROUP_ROWS
    rows, none across a part's end (so every part holds exactly VIDCAP_DATASET_ROWS rows but the last)."""
    import pyarrow as pa

    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    batches = [pa.record_batch({"x": list(range(s, s + n))}) for s, n in zip(starts, sizes, strict=False)]
    old, dataset.GROUP_ROWS = dataset.GROUP_ROWS, group
    try:
        groups = list(dataset._groups(batches, limit))
    finally:
        dataset.GROUP_ROWS = old
    assert [v for g in groups for v in g["x"].to_pylist()] == list(range(sum(sizes)))
    pos = 0
    for g in groups:
        assert 0 < g.num_rows <= group and pos // limit == (pos + g.num_rows - 1) // limit
        pos += g.num_rows


def test_a_very_large_single_file_output_gets_a_one_line_hint(tmp_path, capsys):
    from vidcap.cli import print_summary

    summary = {"ok": 1, "failed": {}, "skipped": 0, "duplicates": 0, "processed": 1, "wall_s": 1.0, "rows_per_s": 1.0}
    for rows, out, hinted in (
        (dataset.HINT_ROWS, "big.parquet", True),
        (dataset.HINT_ROWS - 1, "small.csv", False),
        (dataset.HINT_ROWS, "big", False),
    ):
        print_summary({**summary, "rows": rows}, tmp_path / out)
        err = capsys.readouterr().err
        assert ("-o " + str(tmp_path / "big") + "/" in err) == hinted, err
