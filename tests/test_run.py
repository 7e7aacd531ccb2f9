"""The run machinery end to end through the CLI: outputs, error rows, resume after kill -9, lock, refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from clirun import VIDCAP, vidcap
from media import make_moov_lost, make_text_as_video, make_truncated_mkv, make_video, make_zero_byte


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """50 good clips (relative paths) and 5 broken files, in one folder with a manifest."""
    root = tmp_path_factory.mktemp("clips")
    (root / "v").mkdir()
    rows = []
    for i in range(50):
        p = root / "v" / f"clip_{i:02d}.mp4"
        make_video(p, n_frames=20 + (i % 7), size=(96, 64))
        rows.append({"path": f"v/clip_{i:02d}.mp4", "clip_id": i, "source": "synthetic"})
    broken = {
        "zero.mp4": make_zero_byte,
        "text.mp4": make_text_as_video,
        "moov.mp4": make_moov_lost,
        "cut.mkv": make_truncated_mkv,
    }
    for name, fn in broken.items():
        fn(root / "v" / name)
        rows.append({"path": f"v/{name}", "clip_id": 100 + len(rows), "source": "broken"})
    rows.append({"path": "v/does_not_exist.mp4", "clip_id": 999, "source": "broken"})
    pd.DataFrame(rows).to_csv(root / "m.csv", index=False)
    return root


def read_out(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)


def test_caption_run_keeps_every_row_and_marks_broken_ones(clips, tmp_path):
    out = tmp_path / "out.csv"
    proc = vidcap("caption", clips / "m.csv", "-o", out, "--model", "fake", "--workers", "2", "-q")
    df = read_out(out)
    manifest = pd.read_csv(clips / "m.csv")
    assert len(df) == len(manifest) == 55
    # input order kept; relative paths written absolute because the output is in another folder
    assert list(df["path"]) == [str(clips / p) for p in manifest["path"]]
    assert {
        "clip_id",
        "source",
        "text",
        "num_frames",
        "fps",
        "width",
        "height",
        "frame_idx",
        "model",
        "status",
        "error",
    } <= set(df.columns)
    broken = df["source"] == "broken"
    assert (df.loc[broken, "status"] == "failed").all()
    assert df.loc[~broken, "error"].isna().all() and (df.loc[~broken, "status"] == "ok").all()
    codes = dict(zip(manifest.loc[broken, "path"], df.loc[broken, "error"].str.split(":").str[0], strict=False))
    assert codes["v/does_not_exist.mp4"] == "missing"
    assert codes["v/zero.mp4"] == "decode" and codes["v/text.mp4"] == "decode" and codes["v/moov.mp4"] == "decode"
    assert codes["v/cut.mkv"] in ("decode", "short")
    first = df.iloc[0]
    assert json.loads(first["frame_idx"]) == [2, 7, 12, 16]  # PLLaVA segment centres for 20 frames, K=4
    assert first["num_frames"] == 20 and first["width"] == 96 and first["height"] == 64
    assert "55" not in proc.stderr or "ok" in proc.stderr
    assert "50 ok, 5 failed" in proc.stderr.replace("\n", " ")
    assert not (tmp_path / "out.csv.parts").exists()
    meta = json.loads((tmp_path / "out.csv.run.json").read_text())
    assert meta["fingerprint"]["model"] == "fake" and meta["summary"]["ok"] == 50


def _wait_for_parts(parts: Path, n: int, proc, timeout=60.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if parts.exists() and len(list(parts.glob("part-*.parquet"))) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before it could be killed: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("no part files appeared")


def test_kill_9_then_rerun_gives_the_clean_result(clips, tmp_path):
    clean = tmp_path / "clean.parquet"
    vidcap("caption", clips / "m.csv", "-o", clean, "--model", "fake", "--workers", "2", "-q")
    out = tmp_path / "killed.parquet"
    env = dict(os.environ, VIDCAP_FAKE_DELAY="0.15")
    args = [
        *VIDCAP,
        "caption",
        str(clips / "m.csv"),
        "-o",
        str(out),
        "--model",
        "fake",
        "--workers",
        "2",
        "-q",
        "--batch-size",
        "2",
        "--part-rows",
        "2",
    ]
    for round_ in range(2):  # kill twice at different points, then let it finish
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for_parts(out.with_name(out.name + ".parts"), 3 + 6 * round_, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not out.exists()
    done = vidcap("caption", clips / "m.csv", "-o", out, "--model", "fake", "--workers", "2", "-q")
    assert "skipped (already done)" in done.stderr
    skipped = int(done.stderr.split(" skipped")[0].split(",")[-1].strip())
    assert skipped >= 9
    a, b = read_out(clean), read_out(out)
    assert len(b) == 55 and b["path"].is_unique
    pd.testing.assert_frame_equal(a, b)


def test_second_run_on_same_output_is_refused_while_first_holds_the_lock(clips, tmp_path):
    from vidcap.parts import PartStore

    out = tmp_path / "o.csv"
    store = PartStore(out, {"stage": "caption"})
    store.open()
    try:
        proc = vidcap("caption", clips / "m.csv", "-o", out, "--model", "fake", check=False)
    finally:
        store.close()
    assert proc.returncode == 2
    assert "another vidcap run is writing" in proc.stderr and "Traceback" not in proc.stderr


def test_other_settings_are_refused_unless_overwrite(clips, tmp_path):
    out = tmp_path / "o.csv"
    vidcap("caption", clips / "m.csv", "-o", out, "--model", "fake", "--limit", "3", "-q", "--workers", "0")
    proc = vidcap(
        "caption", clips / "m.csv", "-o", out, "--model", "fake", "--limit", "3", "-q", "--num-frames", "2", check=False
    )
    assert proc.returncode == 2 and "num_frames" in proc.stderr and "--overwrite" in proc.stderr
    vidcap(
        "caption",
        clips / "m.csv",
        "-o",
        out,
        "--model",
        "fake",
        "--limit",
        "3",
        "-q",
        "--workers",
        "0",
        "--num-frames",
        "2",
        "--overwrite",
    )
    df = read_out(out)
    assert [len(json.loads(x)) for x in df["frame_idx"]] == [2, 2, 2]


def test_shard_limit_and_appended_rows(clips, tmp_path):
    m = pd.read_csv(clips / "m.csv")
    m["path"] = [str(clips / p) for p in m["path"]]
    small = tmp_path / "small.csv"
    m.iloc[:6].to_csv(small, index=False)
    out = tmp_path / "small_caption.csv"
    vidcap("caption", small, "--model", "fake", "-q", "--workers", "0", "--shard", "1/3")
    assert list(read_out(out)["clip_id"]) == [1, 4]
    out.unlink()
    (tmp_path / "small_caption.csv.run.json").unlink()
    vidcap("caption", small, "--model", "fake", "-q", "--workers", "0")
    m.iloc[:9].to_csv(small, index=False)  # three rows appended: only they are processed
    proc = vidcap("caption", small, "--model", "fake", "-q", "--workers", "0")
    assert "6 skipped" in proc.stderr and "processed 3 rows" in proc.stderr
    assert len(read_out(out)) == 9 and read_out(out)["status"].eq("ok").all()


def test_duplicate_paths_processed_once_and_reported(clips, tmp_path):
    m = pd.read_csv(clips / "m.csv").iloc[:4]
    m = pd.concat([m, m.iloc[[1, 1]]], ignore_index=True)
    src = clips / "dups.csv"
    m.to_csv(src, index=False)
    out = tmp_path / "d.csv"
    proc = vidcap("caption", src, "-o", out, "--model", "fake", "-q", "--workers", "0")
    assert "processed 4 rows" in proc.stderr and "2 duplicate rows" in proc.stderr
    df = read_out(out)
    assert len(df) == 6 and df["text"].iloc[1] == df["text"].iloc[4] == df["text"].iloc[5]


@pytest.mark.parametrize(
    "content,expect",
    [
        (None, "does not exist"),
        ("", "is empty"),
        ("file,other\na.mp4,1\n", "no 'path' column"),
        ("path,x\n", "no rows"),
        (b"path\n\xff\xfe\xfa.mp4\n", "not UTF-8"),
    ],
)
def test_bad_manifests_end_in_one_sentence(tmp_path, content, expect):
    m = tmp_path / "m.csv"
    if isinstance(content, bytes):
        m.write_bytes(content)
    elif content is not None:
        m.write_text(content)
    proc = vidcap("caption", m, "--model", "fake", check=False)
    assert proc.returncode == 2
    assert expect in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bad_options_end_in_one_sentence(clips, tmp_path):
    for args, expect in [
        (["--model", "no-such-model"], "unknown model"),
        (["--model", "fake", "-o", tmp_path / "x.txt"], ".csv or .parquet"),
        (["--model", "fake", "--shard", "3/2"], "--shard"),
        (["--model", str(tmp_path)], "no config.json"),
    ]:
        proc = vidcap("caption", clips / "m.csv", *args, check=False)
        assert proc.returncode == 2, proc.stderr
        assert expect in proc.stderr and "Traceback" not in proc.stderr


def test_merge_and_diff(tmp_path):
    a = tmp_path / "a.csv"
    b = tmp_path / "b.parquet"
    pd.DataFrame({"path": ["x", "y", "z"], "text": ["1", "2", "3"]}).to_csv(a, index=False)
    pd.DataFrame({"path": ["y", "w"], "text": ["22", "4"]}).to_parquet(b)
    vidcap("merge", a, b, "-o", tmp_path / "m.csv")
    m = pd.read_csv(tmp_path / "m.csv")
    assert sorted(m["path"]) == ["w", "x", "y", "z"] and m.set_index("path").loc["y", "text"] == 22
    vidcap("diff", a, b, "-o", tmp_path / "d.csv")
    assert list(pd.read_csv(tmp_path / "d.csv")["path"]) == ["x", "z"]


def test_retryable_failures_are_redone_on_resume(clips, tmp_path):
    from vidcap.manifest import ABSPATH, RID, read_manifest, row_key_path

    src = tmp_path / "m.csv"
    m = pd.read_csv(clips / "m.csv").iloc[:3]
    m["path"] = [str(clips / p) for p in m["path"]]
    m.to_csv(src, index=False)
    out = tmp_path / "o.csv"
    vidcap("caption", src, "-o", out, "--model", "fake", "-q", "--workers", "0", "--keep-parts")
    parts = out.with_name(out.name + ".parts")
    rows = read_manifest(src)
    rid = row_key_path(rows[ABSPATH][0])
    for p in parts.glob("part-*.parquet"):
        d = pd.read_parquet(p)
        d.loc[d[RID] == rid, ["status", "error", "text"]] = ["failed", "timeout: took too long", None]
        d.to_parquet(p)
    out.unlink()
    (tmp_path / "o.csv.run.json").unlink()
    proc = vidcap("caption", src, "-o", out, "--model", "fake", "-q", "--workers", "0")
    assert "processed 1 rows" in proc.stderr
    assert read_out(out)["status"].eq("ok").all()
