"""The CLI as a newcomer meets it on an 80-column terminal: help that explains every option and shows flags as
flags, `vidcap models` readable without cut names, one sentence for a video given as the manifest, summaries in
words, tag-stats naming the column meant, and runs free of library progress bars and warnings."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from clirun import vidcap
from media import make_image, make_video

NARROW = {"COLUMNS": "80", "LINES": "50", "TERM": "xterm"}


def commands():
    import typer

    from vidcap.cli import app

    root = typer.main.get_command(app)
    out = []
    for name, cmd in root.commands.items():
        if hasattr(cmd, "commands"):  # a group (`vidcap dev`)
            out += [(f"{name} {sub}", c) for sub, c in cmd.commands.items()]
        else:
            out.append((name, cmd))
    return out


def test_every_option_and_argument_has_help():
    missing = []
    for name, cmd in commands():
        for param in cmd.params:
            if param.name == "help":
                continue
            if not (getattr(param, "help", None) or "").strip():
                missing.append(f"{name} {param.opts[0] if param.opts else param.name}")
    assert not missing, f"no help text: {missing}"


@pytest.mark.parametrize("name", [n for n, _ in commands()])
def test_help_at_80_columns_shows_flags_as_flags_and_arguments_in_capitals(name):
    proc = vidcap(*name.split(), "--help", **NARROW)
    text = proc.stdout
    assert "<bool>" not in text and "{" not in text.split("Usage:", 1)[1].splitlines()[0]
    usage = text.split("Usage:", 1)[1].splitlines()[0]
    for word in re.findall(r"\b[a-z_]+\b", usage.split("[OPTIONS]", 1)[-1]):
        assert word in ("python", "m", "vidcap"), f"lower-case argument in usage: {usage}"
    assert max(len(line) for line in text.splitlines()) <= 80


def test_version_and_top_level_help():
    proc = vidcap("--version")
    assert re.fullmatch(r"vidcap \S+\n", proc.stdout)
    text = vidcap("--help", **NARROW).stdout
    assert "--version " in text and "<bool>" not in text


def test_models_fits_80_columns_and_keeps_every_name_whole():
    from vidcap.backends.registry import PRESETS

    text = vidcap("models", **NARROW).stdout
    assert max(len(line) for line in text.splitlines()) <= 80
    for p in PRESETS.values():
        assert re.search(rf"^{re.escape(p.name)}\s", text, re.MULTILINE), p.name
        if p.model_id:
            assert p.model_id in text


def test_a_video_image_or_folder_given_as_the_manifest_says_how_to_list_it(tmp_path):
    clip = make_video(tmp_path / "Megamind.avi", 12, (64, 48))
    for cmd in ("caption", "motion"):
        proc = vidcap(cmd, clip, check=False)
        assert proc.returncode == 2
        assert "is a video, not a manifest" in proc.stderr and "`path` column" in proc.stderr
        assert "Megamind_" not in proc.stderr and "Traceback" not in proc.stderr
    img = make_image(tmp_path / "photo.jpg")
    assert "is an image, not a manifest" in vidcap("caption", img, check=False).stderr
    assert "is a folder, not a manifest" in vidcap("caption", tmp_path, check=False).stderr
    proc = vidcap("caption", tmp_path / "notes.txt", check=False)
    assert proc.returncode == 2 and ".csv or .parquet" in proc.stderr


def test_caption_summary_is_words_not_python(tmp_path):
    make_video(tmp_path / "a.mp4", 12, (64, 48))
    pd.DataFrame({"path": ["a.mp4", "gone.mp4"]}).to_csv(tmp_path / "m.csv", index=False)
    err = vidcap("caption", tmp_path / "m.csv", "--model", "fake", "--workers", "0", "-q").stderr
    assert "1 ok, 1 failed (missing: 1)" in err
    assert "{" not in err and "None" not in err and "flags: none" in err
    pd.DataFrame({"path": ["gone.mp4"]}).to_csv(tmp_path / "bad.csv", index=False)
    proc = vidcap("caption", tmp_path / "bad.csv", "--model", "fake", "--workers", "0", "-q", check=False)
    assert proc.returncode == 1 and "every row failed" in proc.stderr and "flags:" not in proc.stderr


def test_api_summary_lines():
    from vidcap.summary import extra_lines

    unpriced = {
        "ok": 3,
        "api_requests": 3,
        "api_attempts": 4,
        "api_retries": 1,
        "api_errors": {"api": 1},
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "total_tokens": 1500,
        "price_in": None,
        "price_out": None,
        "price_source": None,
        "cost_usd": None,
        "flags": {"empty": 0, "repetition": 2, "flagged": 2},
    }
    lines = extra_lines(unpriced)
    text = "\n".join(lines)
    assert "None" not in text and "{" not in text
    assert "flags: 2 captions flagged (repetition 2)" in text
    assert "api: 3 requests, 1 retried; errors: api 1" in text
    assert "tokens: 1,200 prompt + 300 completion" in text
    assert "cost: unknown" in text and "--price-in" in text
    priced = dict(unpriced, price_in=2.5, price_out=10.0, price_source="table", cost_usd=0.006)
    assert "cost: $0.0060 this run; USD per million tokens: 2.5 in, 10 out, from vidcap's price table" in extra_lines(
        priced
    )
    over = dict(priced, cost_usd_output=0.0185, budget_usd=0.5)
    assert "cost: $0.0060 this run, $0.0185 for this output over every run (--budget $0.50); " in extra_lines(over)[-1]


def test_summary_lines_that_say_nothing_are_left_out():
    """`near dup: clusters 0`, `cost_usd None` in the estimate, `parse failed: 0`: no line at all."""
    from vidcap.summary import extra_lines

    quiet = {
        "ok": 0,
        "parse_failed": 0,
        "estimate": {"prompt_tokens": 10, "completion_tokens": 5, "cost_usd": None},
        "near_dup": {"clusters": 0, "rows_in_clusters": 0, "largest": []},
    }
    assert extra_lines(quiet) == []
    loud = dict(
        quiet,
        parse_failed=2,
        estimate={"cost_usd": 0.25},
        near_dup={"clusters": 1, "rows_in_clusters": 2, "largest": [2]},
    )
    assert extra_lines(loud) == [
        "estimate before the run: about $0.2500",
        "near dup: clusters 1, rows_in_clusters 2, largest 2",
        "parse failed: 2",
    ]


def test_tag_rerun_counts_the_parse_failures_it_kept(tmp_path):
    # the fake chat model answers without a list when a caption has no word of 4+ letters: a parse error
    pd.DataFrame(
        {
            "path": [f"{i}.mp4" for i in range(5)],
            "text": ["A dog runs in the park.", "ab cd", "no", "ok go", "A red car at night."],
        }
    ).to_csv(tmp_path / "t.csv", index=False)
    first = vidcap("tag", tmp_path / "t.csv", "-k", "objects", "--backend", "fake", "-q").stderr
    again = vidcap("tag", tmp_path / "t.csv", "-k", "objects", "--backend", "fake", "-q").stderr
    assert "parse failed: 3" in first
    assert "5 skipped (already done)" in again and "parse failed: 3" in again


def test_tag_stats_names_the_column_meant(tmp_path):
    cols = {f"extra_{i}": [i] for i in range(20)}
    pd.DataFrame({"path": ["a.mp4"], **cols, "actions": ['["run"]'], "status": ["ok"]}).to_csv(
        tmp_path / "t.csv", index=False
    )
    proc = vidcap("tag-stats", tmp_path / "t.csv", "-k", "action", check=False)
    assert proc.returncode == 2
    assert "did you mean 'actions'?" in proc.stderr and "extra_19" in proc.stderr and "status" in proc.stderr
    proc = vidcap("tag-stats", tmp_path / "t.csv", "-k", "objects", check=False)
    assert "did you mean 'actions'?" in proc.stderr


def test_images_are_writable_arrays(tmp_path):
    """A read-only array makes torch warn "The given NumPy array is not writable" in every image run."""
    from vidcap.frames import sample_frames
    from vidcap.frames.images import load_image

    img = make_image(tmp_path / "a.png")
    assert load_image(img)[0].flags.writeable
    assert sample_frames(img, 4).frames.flags.writeable


def test_tagging_with_a_real_model_prints_no_library_bars(tiny_model, tmp_path):
    pytest.importorskip("transformers")
    model = tiny_model("llama")
    pd.DataFrame({"path": ["a.mp4"], "text": ["A dog runs across a park."]}).to_csv(tmp_path / "t.csv", index=False)
    proc = vidcap(
        "tag", tmp_path / "t.csv", "-k", "objects", "-m", model, "--device", "cpu", "--max-new-tokens", "4", "-q"
    )
    assert "Loading weights" not in proc.stderr and "it/s]" not in proc.stderr, proc.stderr
    assert "UserWarning" not in proc.stderr


def test_quiet_transformers_leaves_hub_download_bars_on():
    pytest.importorskip("transformers")
    from huggingface_hub import utils as hub
    from transformers.utils import logging as tf_logging

    from vidcap.backends.hf_common import quiet_transformers

    before = hub.are_progress_bars_disabled()
    quiet_transformers()
    try:
        assert not tf_logging.is_progress_bar_enabled()
        assert hub.are_progress_bars_disabled() == before
    finally:
        tf_logging.enable_progress_bar()
        if before:
            hub.disable_progress_bars()


def test_a_quoted_tilde_in_the_manifest_and_output_is_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    make_video(home / "a.mp4", 12, (64, 48))
    pd.DataFrame({"path": ["a.mp4"]}).to_csv(home / "m.csv", index=False)
    vidcap(
        "caption",
        "~/m.csv",
        "--model",
        "fake",
        "--workers",
        "0",
        "-q",
        "-o",
        "~/out.parquet",
        cwd=tmp_path,
        HOME=str(home),
    )
    assert pd.read_parquet(home / "out.parquet").status.tolist() == ["ok"]
    assert not (tmp_path / "~").exists()


def test_tagging_a_manifest_without_captions_and_negative_workers(tmp_path):
    pd.DataFrame({"path": ["a.mp4"]}).to_csv(tmp_path / "m.csv", index=False)
    proc = vidcap("tag", tmp_path / "m.csv", "-k", "objects", "--backend", "fake", check=False)
    assert proc.returncode == 2 and "no 'text' column" in proc.stderr and "vidcap caption" in proc.stderr
    proc = vidcap("caption", tmp_path / "m.csv", "--model", "fake", "--workers", "-1", check=False)
    assert proc.returncode == 2 and "--workers must be 0" in proc.stderr
