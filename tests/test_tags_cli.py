"""`vidcap tag` and `vidcap tag-stats` from the command line, with a tiny Llama from `vidcap dev tiny-model`."""

import json

import pandas as pd
import pytest

from vidcap.cli import main
from vidcap.manifest import read_table

pytest.importorskip("transformers")


def _manifest(tmp_path):
    path = tmp_path / "meta.csv"
    pd.DataFrame(
        {
            "path": ["a.mp4", "b.mp4", "c.mp4"],
            "text": ["A dog runs across a park.", "", "A red car drives on a wet road at night."],
        }
    ).to_csv(path, index=False)
    return path


def test_tag_cli_with_tiny_llama_then_stats(tmp_path, capsys):
    model = tmp_path / "tiny-llama"
    assert main(["dev", "tiny-model", str(model), "--family", "llama"]) == 0
    manifest = _manifest(tmp_path)
    rc = main(
        [
            "tag",
            str(manifest),
            "--key",
            "objects",
            "-m",
            str(model),
            "--device",
            "cpu",
            "--max-new-tokens",
            "6",
            "-b",
            "2",
            "-q",
        ]
    )
    assert rc == 0
    out = tmp_path / "meta_objects.csv"  # default name: <stem>_<key> beside the input
    df = read_table(out)
    assert list(df["path"]) == ["a.mp4", "b.mp4", "c.mp4"] and {"objects", "status", "error"} <= set(df.columns)
    assert df["error"][1].startswith("empty_text:")
    for status, err, cell in zip(df["status"], df["error"].fillna(""), df["objects"], strict=False):
        # random weights: a row is either a clean list or a parse error quoting the answer
        assert (status == "ok" and isinstance(json.loads(cell), list)) or err.split(":")[0] in ("parse", "empty_text")
    capsys.readouterr()
    png = tmp_path / "objects.png"
    assert main(["tag-stats", str(out), "--key", "objects", "--png", str(png)]) == 0
    printed = capsys.readouterr().out
    tagged = int((df["status"] == "ok").sum())
    assert f"objects: 3 rows, {tagged} tagged" in printed
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_tag_cli_usage_errors(tmp_path, capsys):
    manifest = _manifest(tmp_path)
    assert main(["tag", str(manifest), "--key", "colors", "--backend", "fake"]) == 2
    assert "--prompt-file" in capsys.readouterr().err
    empty = tmp_path / "empty-model"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    assert main(["tag", str(manifest), "--key", "objects", "-m", str(empty), "--device", "cpu", "-q"]) == 2
    err = capsys.readouterr().err
    assert "safetensors" in err and "Traceback" not in err
    assert main(["tag-stats", str(manifest), "--key", "objects"]) == 2
    assert "no 'objects' column" in capsys.readouterr().err


def test_tag_cli_fake_backend_and_custom_prompt(tmp_path):
    manifest = _manifest(tmp_path)
    pf = tmp_path / "nouns.txt"
    pf.write_text("List the nouns of the caption as [a, b].")
    out = tmp_path / "nouns.parquet"
    assert (
        main(
            [
                "tag",
                str(manifest),
                "--key",
                "nouns",
                "--prompt-file",
                str(pf),
                "--backend",
                "fake",
                "-o",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    df = read_table(out)
    assert [list(c) if c is not None else None for c in df["nouns"]] == [
        ["runs", "across", "park"],
        None,
        ["drives", "road", "night"],
    ]


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_a_rerun_over_a_finished_tag_output_keeps_its_columns(tmp_path, suffix):
    """Tagging a caption output, whose file_size and file_mtime are input columns to `tag` (it reads no
    file): a rerun over the finished output used to take them for the tag's own file stamps and rename them
    (`file_size_input_2` ...), so the output's columns depended on whether it had run before."""
    captions = tmp_path / "cap.csv"
    pd.DataFrame(
        {
            "path": ["a.mp4", "b.mp4", "a.mp4"],
            "text": ["A dog runs across a park.", "", "A dog runs across a park."],
            "file_size": ["100", "", "100"],
            "file_mtime": ["1.5", "", "1.5"],
            "status": ["ok", "failed", "ok"],
        }
    ).to_csv(captions, index=False)
    out = tmp_path / f"tags.{suffix}"
    args = ["tag", str(captions), "--key", "objects", "--backend", "fake", "-o", str(out), "-q"]
    assert main(args) == 0
    first = read_table(out)
    assert list(first.columns[:5]) == ["path", "text", "file_size", "file_mtime", "status_input"]
    for _ in range(2):
        assert main(args) == 0
        pd.testing.assert_frame_equal(read_table(out), first)
