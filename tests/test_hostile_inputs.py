"""Hostile inputs and bad manifests/options through the CLI: every bad row is an error row with a short
code (or is handled correctly), the run completes, and every user mistake is one sentence, exit 2, no
traceback and nothing half-written. Complements tests/test_run.py (which covers the basic cases)."""

from __future__ import annotations

import json
import os
import shutil

import pandas as pd
import pytest
from clirun import vidcap
from media import (
    make_audio_only,
    make_large,
    make_moov_lost,
    make_text_as_video,
    make_truncated_faststart,
    make_truncated_mkv,
    make_video,
    make_zero_byte,
    real_videos,
)

from vidcap.frames.positions import frame_indices

pytestmark = pytest.mark.timeout(240)

K = 4  # frames asked per clip (the fake preset's default, PLLaVA segment positions)


def one_sentence_refusal(proc, *words):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidcap: error: "), proc.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


# name -> (expected: "ok", or the set of acceptable error codes)
EXPECT = {
    "good": "ok",
    "zero_byte": {"decode"},
    "moov_lost": {"decode"},
    "truncated_mkv": {"short", "decode"},
    "truncated_faststart": {"short", "decode"},
    "text_as_mp4": {"decode"},
    "random_bytes_mkv": {"decode"},
    "megamind_bugy": "ok-or-short",
    "mpegts": "ok",
    "audio_only": {"decode"},
    "missing": {"missing"},
    "directory": {"not_a_file"},
    "fifo": {"not_a_file"},
    "one_frame": "ok",
    "three_frames": "ok",
    "4k": "ok",
    "vertical": "ok",
    "vfr_mkv": "ok",
    "vfr_mp4": "ok",
    "spaces_unicode": "ok",
    "empty_string": {"empty_path"},
    "nan_path": {"empty_path"},
    "blank": {"empty_path"},
    "dup_relative": "ok",
    "dup_dotdot": "ok",
    "dup_absolute": "ok",
}
TRUE_FRAMES = {
    "good": 30,
    "mpegts": 30,
    "one_frame": 1,
    "three_frames": 3,
    "4k": 5,
    "vertical": 30,
    "vfr_mkv": 30,
    "vfr_mp4": 30,
    "spaces_unicode": 30,
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    v = root / "v"
    v.mkdir()
    paths = {
        "good": make_video(v / "good.mp4", n_frames=30, size=(64, 48)),
        "zero_byte": make_zero_byte(v / "zero.mp4"),
        "moov_lost": make_moov_lost(v / "moov.mp4"),
        "truncated_mkv": make_truncated_mkv(v / "cut.mkv"),
        "truncated_faststart": make_truncated_faststart(v / "cut_faststart.mp4"),
        "text_as_mp4": make_text_as_video(v / "text.mp4"),
        "mpegts": make_video(v / "clip.ts", n_frames=30, size=(64, 48)),
        "audio_only": make_audio_only(v / "audio.mp4"),
        "missing": v / "nope.mp4",
        "directory": v / "a_dir.mp4",
        "fifo": v / "pipe.mp4",
        "one_frame": make_video(v / "one.mp4", n_frames=1, size=(64, 48)),
        "three_frames": make_video(v / "three.mkv", n_frames=3, size=(64, 48)),
        "4k": make_large(v / "big4k.mp4", n_frames=5),
        "vertical": make_video(v / "vertical.mp4", n_frames=30, size=(48, 96)),
        "vfr_mkv": make_video(v / "vfr.mkv", n_frames=30, size=(64, 48), vfr=True),
        "vfr_mp4": make_video(v / "vfr.mp4", n_frames=30, size=(64, 48), vfr=True),
    }
    (v / "random.mkv").write_bytes(os.urandom(64 * 1024))
    paths["random_bytes_mkv"] = v / "random.mkv"
    (v / "a_dir.mp4").mkdir()
    os.mkfifo(v / "pipe.mp4")  # opening it for reading would block forever
    odd = v / "dir with spaces" / "clïp ünïcødé 日本語 #1.mp4"
    odd.parent.mkdir()
    shutil.copyfile(paths["good"], odd)
    paths["spaces_unicode"] = odd
    bugy = real_videos().get("Megamind_bugy.avi")
    rows = [{"name": n, "path": str(p.relative_to(root))} for n, p in paths.items()]
    if bugy is not None:
        rows.append({"name": "megamind_bugy", "path": str(bugy)})
    rows += [
        {"name": "empty_string", "path": ""},
        {"name": "nan_path", "path": float("nan")},
        {"name": "blank", "path": "   "},
        {"name": "dup_relative", "path": "v/good.mp4"},
        {"name": "dup_dotdot", "path": "v/../v/good.mp4"},
        {"name": "dup_absolute", "path": str(root / "v" / "good.mp4")},
    ]
    pd.DataFrame(rows).to_csv(root / "m.csv", index=False)
    return root


@pytest.fixture(scope="module")
def result(hostile):
    out = hostile / "out.parquet"
    proc = vidcap("caption", hostile / "m.csv", "-o", out, "--model", "fake", "--workers", "2", "-q")
    return pd.read_parquet(out), proc


def test_every_hostile_row_is_handled_and_the_run_completes(hostile, result):
    df, proc = result
    manifest = pd.read_csv(hostile / "m.csv", keep_default_na=False)
    assert list(df["name"]) == list(manifest["name"])  # every row once, in input order
    assert not (hostile / "out.parquet.parts").exists()
    seen = {}
    for row in df.itertuples():
        want = EXPECT[row.name]
        code = (row.error or "").split(":", 1)[0]
        seen[row.name] = row.status if row.status == "ok" else code
        if want == "ok":
            assert row.status == "ok" and not row.error, (row.name, row.error)
        elif want == "ok-or-short":  # a real damaged file: decoded fully or refused, never silently short
            assert row.status == "ok" or code in {"short", "decode"}, (row.name, row.error)
        else:
            assert row.status == "failed" and code in want, (row.name, row.error)
            assert len(row.error) < 320 and "\n" not in row.error
            assert str(hostile) not in row.error  # messages name the problem, not the path again
    print("\nhostile inputs:", len(df), "rows,", json.dumps(seen))
    ok, failed = int((df["status"] == "ok").sum()), int((df["status"] == "failed").sum())
    # the summary counts distinct files: 3 more copies of good.mp4, 3 empty paths sharing one key
    assert f"{ok - 3} ok, {failed - 2} failed" in proc.stderr.replace("\n", " ")


def test_ok_rows_use_exactly_the_frames_asked(result):
    df, _ = result
    for row in df[df["status"] == "ok"].itertuples():
        idx = list(row.frame_idx)
        assert len(idx) == K, row.name  # never fewer frames than asked, never silently
        if row.name in TRUE_FRAMES:
            n = TRUE_FRAMES[row.name]
            assert row.num_frames == n, (row.name, row.num_frames)
            assert idx == frame_indices(n, K, "segments"), row.name  # repeats show a short clip honestly
        assert max(idx) < row.num_frames


def test_sizes_and_odd_paths(result):
    df, _ = result
    by = df.set_index("name")
    assert (by.loc["4k", "width"], by.loc["4k", "height"]) == (3840, 2160)
    assert (by.loc["vertical", "width"], by.loc["vertical", "height"]) == (48, 96)
    # the same file as good.mp4 under another name: the very same caption
    assert by.loc["spaces_unicode", "text"] == by.loc["good", "text"]
    assert by.loc["vfr_mkv", "text"] != by.loc["good", "text"]


def test_duplicates_and_empty_paths_processed_once_and_reported(result):
    df, proc = result
    by = df.set_index("name")
    texts = {by.loc[n, "text"] for n in ("good", "dup_relative", "dup_dotdot", "dup_absolute")}
    assert len(texts) == 1
    # 3 copies of good.mp4 + 3 empty paths that share one (empty) key: 2 of them are duplicates
    assert "5 duplicate rows" in proc.stderr
    assert "processed" in proc.stderr and f"processed {len(df) - 5} rows" in proc.stderr


def test_megamind_bugy_is_real_and_handled(result):
    if real_videos().get("Megamind_bugy.avi") is None:
        pytest.skip("Megamind_bugy.avi not installed (apt-get install opencv-doc)")
    df, _ = result
    row = df.set_index("name").loc["megamind_bugy"]
    if row["status"] == "ok":
        assert row["num_frames"] > 100 and len(set(row["frame_idx"])) == K
    else:
        assert row["error"].split(":")[0] in {"short", "decode"}


# -- bad manifests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,content,words",
    [
        ("m.txt", "path\na.mp4\n", [".csv or .parquet"]),
        ("m.parquet", b"PAR1 this is not parquet at all", ["could not be read"]),
        ("m.csv", "\n\n\n", ["empty"]),
        ("m.csv", "video,caption\na.mp4,x\n", ["no 'path' column", "video, caption"]),
        ("m.csv", b"path\n\xc3\x28bad.mp4\n", ["not UTF-8"]),
        ("m.csv", 'path,x\n"unterminated,1\n', ["line 2 has a quote that never closes"]),
        # ragged rows: DuckDB's sniffer took a later line for the header, or failed without naming the line
        ("m.csv", "path,x\na.mp4,1,2,3\n", ["line 2 has more cells than its header's 2", '"a,b.mp4"']),
        ("m.csv", "path,x\n" + "a.mp4,1\n" * 3000 + "b,c.mp4,2\n", ["line 3002 has more cells"]),  # past the sample
        ("m.csv", "path,x,y\na.mp4,1\n", ["line 2 has 2 of its header's 3 cells"]),
        ("m.csv", "path,x\na.mp4,1\n".encode("utf-16"), ["not UTF-8"]),  # Excel's "Unicode text"
        ("m.parquet", b"PAR1\x15\x04\x15\x00\x00\x00 cut short", ["could not be read"]),  # NUL bytes, not text
        ("m.csv", "path;label\na.mp4;x\n", ["separated by ';'", "comma-separated"]),  # a European-locale export
        ("m.csv", "path\tlabel\na.mp4\tx\n", ["separated by '\\t'"]),
    ],
)
def test_bad_manifests_are_one_sentence(tmp_path, name, content, words):
    m = tmp_path / name
    m.write_bytes(content if isinstance(content, bytes) else content.encode())
    proc = vidcap("caption", m, "--model", "fake", "-o", tmp_path / "out.csv", check=False)
    one_sentence_refusal(proc, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing written


def test_manifest_that_is_a_directory_and_utf8_bom(tmp_path, hostile):
    d = tmp_path / "dir.csv"
    d.mkdir()
    one_sentence_refusal(vidcap("caption", d, "--model", "fake", check=False), "is a directory")
    bom = tmp_path / "bom.csv"  # Excel's "CSV UTF-8" starts with a byte-order mark
    bom.write_bytes(b"\xef\xbb\xbfpath\n" + str(hostile / "v" / "good.mp4").encode() + b"\n")
    vidcap("caption", bom, "--model", "fake", "-q", "--workers", "0")
    assert pd.read_csv(tmp_path / "bom_caption.csv")["status"].tolist() == ["ok"]


# -- bad options and outputs ---------------------------------------------------------------------------


@pytest.fixture
def small(tmp_path, hostile):
    m = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(hostile / "v" / "good.mp4"), str(hostile / "v" / "one.mp4")]}).to_csv(m, index=False)
    return m


def test_output_not_writable(tmp_path, small):
    blocker = tmp_path / "afile"
    blocker.write_text("a regular file where a folder should be")
    proc = vidcap("caption", small, "--model", "fake", "-o", blocker / "sub" / "out.csv", check=False)
    one_sentence_refusal(proc, "writable -o path")
    assert blocker.read_text().startswith("a regular file")


def test_output_is_a_directory(tmp_path, small):
    (tmp_path / "out.csv").mkdir()
    proc = vidcap(
        "caption",
        small,
        "--model",
        "fake",
        "-o",
        tmp_path / "out.csv",
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (tmp_path / "out.csv").is_dir() and not any((tmp_path / "out.csv").iterdir())


def test_output_by_another_command_or_model_is_refused_unless_overwrite(tmp_path, small):
    out = tmp_path / "o.csv"
    vidcap("motion", small, "-o", out, "-q", "--workers", "0")
    before = out.read_bytes()
    proc = vidcap("caption", small, "--model", "fake", "-o", out, "-q", check=False)
    one_sentence_refusal(proc, "written by another command or model", "--overwrite")
    assert out.read_bytes() == before and not (tmp_path / "o.csv.parts").exists()
    vidcap("caption", small, "--model", "fake", "-o", out, "-q", "--workers", "0", "--overwrite")
    df = pd.read_csv(out)
    assert "text" in df.columns and "cmotion" not in df.columns
    assert json.loads((tmp_path / "o.csv.run.json").read_text())["fingerprint"]["stage"] == "caption"


def test_unfinished_run_with_other_settings_is_refused(tmp_path, small):
    out = tmp_path / "o.parquet"
    vidcap("caption", small, "--model", "fake", "-o", out, "-q", "--workers", "0", "--keep-parts")
    out.unlink()
    (tmp_path / "o.parquet.run.json").unlink()  # as if the first run had died before its merge
    proc = vidcap("caption", small, "--model", "fake", "-o", out, "--prompt", "image", check=False)
    one_sentence_refusal(proc, "unfinished run with other settings", "--overwrite")
    assert not out.exists()


def test_user_file_as_output_is_not_clobbered(tmp_path, small):
    proc = vidcap("caption", small, "--model", "fake", "-o", small, check=False)
    one_sentence_refusal(proc, "not written by vidcap")
    assert pd.read_csv(small).columns.tolist() == ["path"]


@pytest.mark.parametrize(
    "args,words",
    [
        (["--num-frames", "0"], ["--num-frames"]),
        (["--limit", "-1"], ["--limit"]),
        (["--shard", "a/b"], ["--shard"]),
        (["--prompt", "no-such-prompt"], ["no-such-prompt"]),
        (["--prompt-file", "/nonexistent/prompt.txt"], ["--prompt-file"]),
        (["--pooling-shape", "4x12"], ["--pooling-shape"]),
    ],
)
def test_bad_options_are_one_sentence(tmp_path, small, args, words):
    proc = vidcap("caption", small, "--model", "fake", "-o", tmp_path / "o.csv", *args, check=False)
    one_sentence_refusal(proc, *words)
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "o.csv.parts").exists()


@pytest.mark.parametrize(
    "args,words",
    [
        (["--frames", "3"], ["No such option: --frames"]),
        (["--num-frames", "three"], ["Invalid value for '--num-frames'"]),
    ],
)
def test_click_usage_errors_exit_2_without_a_traceback(tmp_path, small, args, words):
    """Parser errors come from click, or from the copy of it that typer >= 0.29 vendors: both exit 2."""
    proc = vidcap("caption", small, "--model", "fake", "-o", tmp_path / "o.csv", *args, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert all(w in proc.stderr for w in words), proc.stderr
    assert not (tmp_path / "o.csv").exists()


def test_empty_shard_and_zero_limit_write_an_empty_output(tmp_path, small):
    for args in (["--shard", "5/8"], ["--limit", "0"]):
        out = tmp_path / f"o{args[0]}.csv"
        vidcap("caption", small, "--model", "fake", "-o", out, "-q", "--workers", "0", *args)
        assert len(pd.read_csv(out)) == 0 and not (tmp_path / f"{out.name}.parts").exists()
