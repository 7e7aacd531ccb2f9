"""Real use: `-text` prompts (re-captioning with the row's old caption as a hint) run, with the fake model and a
tiny real model; a row without text is that row's `empty_text` error, not the run's."""

import pandas as pd
import pytest
from clirun import vidcap
from media import make_video


@pytest.mark.parametrize("model,prompt", [("fake", "video-text"), ("qwen2-vl", "video-f3-detail-2ex-text")])
def test_text_prompts_fill_each_row(tiny_model, tmp_path, model, prompt):
    if model != "fake":
        pytest.importorskip("transformers")
        model = str(tiny_model(model))
    clips = [make_video(tmp_path / f"c{i}.mp4", 24, (96, 64)) for i in range(2)]
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(c) for c in clips], "text": ["a dog runs on grass", None]}).to_csv(manifest, index=False)
    out = tmp_path / "o.csv"
    vidcap(
        "caption",
        manifest,
        "-o",
        out,
        "--model",
        model,
        "--prompt",
        prompt,
        "--workers",
        "0",
        "--max-new-tokens",
        "4",
        "-q",
    )
    df = pd.read_csv(out)
    assert df["status"].tolist() == ["ok", "failed"]
    assert df["error"].iloc[1].startswith("empty_text")
    assert df["text_input"].iloc[0] == "a dog runs on grass"


@pytest.mark.parametrize(
    "prompt,turn,limit",
    [
        ("pllava", "Describe the video in details.", 256),
        ("pllava-short", "Describe the video in detail.", 128),
        ("pllava-person-short", "Describe the video in detail.", 128),
    ],
)
def test_open_sora_prompts_keep_their_user_turn_and_token_limit(tiny_model, prompt, turn, limit):
    """Open-Sora v1.3's PLLaVA prompts go with "Describe the video in detail." and 128 tokens for the short
    ones; v1.2's `pllava` keeps "details." and 256. --max-new-tokens still wins when given."""
    pytest.importorskip("transformers")
    from vidcap.backends.base import CaptionOptions
    from vidcap.backends.registry import resolve_model
    from vidcap.prompts.caption import get_prompt
    from vidcap.stages.caption import CaptionStage

    path = tiny_model("pllava")
    stage = CaptionStage(resolve_model(str(path)), CaptionOptions(prompt=prompt, max_new_tokens=None))
    assert stage.options.max_new_tokens == limit
    backend = stage.backend
    backend.load_preprocessor(path)
    text = backend.tokenizer.decode(backend.token_ids(get_prompt(prompt).text))
    assert text.rstrip().endswith(f"{turn} ASSISTANT:")
    assert (
        CaptionStage(resolve_model(str(path)), CaptionOptions(prompt=prompt, max_new_tokens=40)).options.max_new_tokens
        == 40
    )


def test_hub_ids_reach_their_backend(monkeypatch):
    """A Hub id names its preset by model id; an unknown one is placed by its config.json; the seed's
    original-LLaVA ids get one sentence naming the preset to use."""
    pytest.importorskip("transformers")
    from vidcap.backends import registry
    from vidcap.errors import UsageError

    assert registry.resolve_model("ermu2001/pllava-13b").name == "pllava-13b"
    llava = registry.resolve_model("llava-hf/llava-v1.6-mistral-7b-hf")
    assert (llava.backend, llava.num_frames, llava.positions) == ("hf-llava", 3, "points")
    with pytest.raises(UsageError, match="use the preset llava-1.6-mistral-7b"):
        registry.resolve_model("liuhaotian/llava-v1.6-mistral-7b")
    monkeypatch.setattr(registry, "hub_config", lambda model: {"model_type": "llava", "pooling_shape": [4, 12, 12]})
    assert registry.resolve_model("someone/pllava-finetune").backend == "hf-pllava"
    monkeypatch.setattr(registry, "hub_config", lambda model: {"model_type": "llava_next"})
    assert registry.resolve_model("someone/llava-next-ft").backend == "hf-llava"
    monkeypatch.setattr(registry, "hub_config", lambda model: None)  # offline: the generic VLM path decides at load
    assert registry.resolve_model("someone/unknown").backend == "hf-vlm"


def test_offline_tagging_fails_fast_in_one_sentence(tmp_path):
    """No network and nothing cached: one sentence within seconds (not the library's retries), naming the
    gated Llama model's extra step."""
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": ["a.mp4"], "text": ["A dog runs."]}).to_csv(manifest, index=False)
    t0 = time.monotonic()
    proc = vidcap(
        "tag",
        manifest,
        "--key",
        "objects",
        "-m",
        "meta-llama/Meta-Llama-3-8B-Instruct",
        check=False,
        HF_ENDPOINT=f"http://127.0.0.1:{port}",
        HF_HOME=str(tmp_path / "hf"),
        HF_HUB_OFFLINE="",
    )
    assert proc.returncode == 2 and time.monotonic() - t0 < 30
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot be reached" in lines[0] and "hf auth login" in lines[0], proc.stderr


@pytest.mark.parametrize(
    "flag,answer",
    [("--dp-size", "--gpus"), ("--tp-size", "--tp"), ("--bs=8", "--batch-size"), ("--model-path", "--model")],
)
def test_open_sora_flags_name_the_vidcap_option(flag, answer):
    proc = vidcap("caption", "meta.csv", flag, *([] if "=" in flag else ["4"]), check=False)
    assert proc.returncode == 2 and f"in vidcap use {answer}" in proc.stderr and "Traceback" not in proc.stderr


def test_failed_out_gives_a_table_of_ok_rows_only(tmp_path):
    """--failed-out: the output holds only ok rows (what Open-Sora's loader takes as it is), the failed ones
    go to their own file with their errors; together they hold every row once."""
    clips = [make_video(tmp_path / f"c{i}.mp4", 24, (96, 64)) for i in range(3)]
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(c) for c in clips] + [str(tmp_path / "gone.mp4")]}).to_csv(manifest, index=False)
    out, bad = tmp_path / "ok.csv", tmp_path / "failed.csv"
    vidcap("caption", manifest, "-o", out, "--model", "fake", "--workers", "0", "--failed-out", bad, "-q")
    ok, failed = pd.read_csv(out), pd.read_csv(bad)
    assert len(ok) == 3 and (ok["status"] == "ok").all() and ok["num_frames"].dtype.kind == "i"
    assert len(failed) == 1 and failed["error"].iloc[0].startswith("missing")


def test_a_run_where_every_row_failed_exits_non_zero(tmp_path):
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(tmp_path / "gone1.mp4"), str(tmp_path / "gone2.mp4")]}).to_csv(manifest, index=False)
    out = tmp_path / "o.csv"
    proc = vidcap("caption", manifest, "-o", out, "--model", "fake", "--workers", "0", "-q", check=False)
    assert proc.returncode == 1 and "every row failed" in proc.stderr
    assert pd.read_csv(out)["error"].str.startswith("missing").all()  # the rows and their errors are written
