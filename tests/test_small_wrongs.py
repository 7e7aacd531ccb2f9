"""Issue 33's noise and small wrongs, each shown on the CLI: help text rich does not turn into emoji, `vidcap
models` in plain words, report filters that name what exists, U+FFFD captions flagged, tiny models readable
like any file, the README naming every tiny-model family."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pandas as pd
import pytest
from clirun import cli_env, vidcap
from fake_openai_server import FakeOpenAIServer
from media import make_video

from vidcap.dev.tiny import FAMILIES

ROOT = Path(__file__).parents[1]


def test_bench_help_shows_the_lengths_option_as_written():
    out = vidcap("bench", "--help", env=cli_env(COLUMNS="200")).stdout
    assert "Two token counts A:B;" in out and "\U0001f171" not in out  # not rich's :b: emoji


def test_models_says_frame_counts_in_words_and_marks_the_default():
    out = vidcap("models", env=cli_env(COLUMNS="200")).stdout
    assert not re.search(r"\b1 frames\b", out)
    assert re.search(r"^qwen2\.5-vl-7b \(default\)\s", out, re.MULTILINE), out


def test_readme_and_help_name_every_tiny_model_family():
    readme = (ROOT / "README.md").read_text()
    line = next(x for x in readme.splitlines() if "vidcap dev tiny-model DIR" in x)
    helptext = vidcap("dev", "tiny-model", "--help", env=cli_env(COLUMNS="300")).stdout
    for family in FAMILIES:
        assert f"`{family}`" in line and family in helptext, family


@pytest.fixture(scope="module")
def captioned(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("noise")
    paths = [make_video(root / f"c{i}.mp4", n_frames=12) for i in range(3)]
    pd.DataFrame({"path": [str(p) for p in paths]}).to_csv(root / "m.csv", index=False)
    vidcap("caption", root / "m.csv", "-o", root / "caps.csv", "--model", "fake", "--workers", "0", "-q")
    return root / "caps.csv"


def test_a_bogus_flag_filter_names_the_known_flags(captioned, tmp_path):
    proc = vidcap("report", captioned, "-o", tmp_path / "r.html", "--filter", "flag=bogus", check=False)
    assert proc.returncode == 2 and "not a flag vidcap sets" in proc.stderr and "repetition" in proc.stderr
    assert not (tmp_path / "r.html").exists()


def test_an_unknown_filter_key_lists_status_first(captioned, tmp_path):
    proc = vidcap("report", captioned, "-o", tmp_path / "r.html", "--filter", "nope=1", check=False)
    assert proc.returncode == 2
    listed = proc.stderr.split("use one of:", 1)[1]
    assert listed.strip().startswith("flag, error, status")


def test_a_caption_without_spaces_wraps_inside_its_card(tmp_path):
    clip = make_video(tmp_path / "c.mp4", n_frames=12)
    table = tmp_path / "t.csv"
    pd.DataFrame({"path": [str(clip)], "text": ["x" * 3000], "status": ["ok"], "error": [""]}).to_csv(table)
    vidcap("report", table, "-o", tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    rule = re.search(r"\.caption,[^{]*\{([^}]*)\}", page)
    assert rule and "overflow-wrap:anywhere" in rule.group(1) and "min-width:0" in rule.group(1)


def test_a_caption_full_of_replacement_characters_is_flagged(tmp_path):
    clip = make_video(tmp_path / "c.mp4", n_frames=12)
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(clip)]}).to_csv(manifest, index=False)
    with FakeOpenAIServer() as server:
        server.script[""] = ["fffd"]
        out = tmp_path / "o.csv"
        vidcap(
            "caption",
            manifest,
            "-o",
            out,
            "--backend",
            "openai",
            "--base-url",
            server.base_url,
            "--model",
            "x",
            "--workers",
            "0",
            "-q",
        )
    row = pd.read_csv(out).iloc[0]
    assert row["status"] == "ok" and row["text"].count("\ufffd") == 84 and "replaced_chars" in row["flags"]


def test_tiny_model_files_are_readable_by_others(tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "tiny"
    vidcap("dev", "tiny-model", out, "--family", "llama")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert any(name.endswith(".safetensors") for name in modes)
    assert all(mode & 0o044 == 0o044 for mode in modes.values()), modes  # the test umask (022) keeps r--r--


def test_one_frame_count_rule_for_every_stage(tmp_path):
    """`frames.container.check_frame_count` is the rule caption's scan applies (motion's reader is to call it
    too): an MP4 holding fewer frames than its header lists is `short`."""
    from vidcap.errors import SHORT, VidcapError
    from vidcap.frames import sample_frames
    from vidcap.frames.container import INDEXED_FORMATS, check_frame_count

    clip = make_video(tmp_path / "whole.mp4", n_frames=132, faststart=True)
    cut = tmp_path / "cut.mp4"
    data = clip.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 5])
    with pytest.raises(VidcapError) as err:
        sample_frames(str(cut), 4)
    assert err.value.code == SHORT and "frames present" in err.value.message
    with pytest.raises(VidcapError) as err:
        check_frame_count(INDEXED_FORMATS[0], 49, 132)
    assert err.value.code == SHORT and err.value.message == "truncated file: 49 of 132 frames present"
    check_frame_count(INDEXED_FORMATS[0], 132, 132)
    check_frame_count("avi", 49, 132)  # a header count that is not exact decides nothing


def test_a_tag_row_whose_caption_failed_says_so(tmp_path):
    make_video(tmp_path / "a.mp4", n_frames=12, size=(64, 48))
    (tmp_path / "m.csv").write_text("path\na.mp4\ngone.mp4\n")
    vidcap("caption", tmp_path / "m.csv", "--model", "fake", "--workers", "0", "-q")
    vidcap("tag", tmp_path / "m_caption.csv", "--key", "objects", "--backend", "fake", "-q")
    got = pd.read_csv(tmp_path / "m_caption_objects.csv", keep_default_na=False)
    assert got["status"].tolist() == ["ok", "failed"]
    assert got["error"][1].startswith("empty_text: the caption failed (missing")
