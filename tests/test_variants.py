"""`vidcap caption --variants short,dense`: one caption column per variant, from the CLI with the fake model and
with tiny real models through the engine; the engine's shared visual prefill gives the same greedy tokens as
prefilling each variant alone; a killed run resumes with every row once; a bad name is one sentence."""

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
from fake_openai_server import FakeOpenAIServer
from media import make_video

from vidcap.backends.base import CaptionOptions
from vidcap.errors import UsageError
from vidcap.prompts.caption import get_prompt
from vidcap.stages.caption_variants import VariantPlan, column

COLS = ["caption_short", "caption_dense"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("variant_clips")
    sizes = [(160, 120), (96, 128), (128, 96), (112, 112), (144, 96), (96, 96)]
    paths = [make_video(root / f"v{i}.mp4", 20 + 3 * i, size) for i, size in enumerate(sizes)]
    pd.DataFrame({"path": [str(p) for p in paths]}).to_csv(root / "m.csv", index=False)
    return root


def _caption(clips, out, *extra, **kw):
    return vidcap("caption", clips / "m.csv", "-o", out, "--workers", "1", "-q", *extra, **kw)


def test_fake_model_fills_one_column_per_variant(clips, tmp_path):
    out = tmp_path / "o.parquet"
    _caption(clips, out, "--model", "fake", "--variants", "short,dense")
    df = pd.read_parquet(out)
    assert len(df) == 6 and (df["status"] == "ok").all()
    for c in COLS:
        assert df[c].str.len().gt(0).all() and (df[f"{c}_error"] == "").all()
        assert df[f"{c}_completion_tokens"].gt(0).all() and df[f"{c}_prompt_tokens"].gt(0).all()
    assert (df["caption_short"] != df["caption_dense"]).all()  # the fake caption names its prompt
    assert (df["text"] == df["caption_short"]).all() and (df["prompt"] == "short").all()  # `text` is the first
    meta = json.loads(Path(f"{out}.run.json").read_text())
    assert meta["fingerprint"]["variants"] == ["short", "dense"]


def test_api_backend_sends_one_request_per_variant(clips, tmp_path):
    server = FakeOpenAIServer().start()
    try:
        out = tmp_path / "api.parquet"
        args = ["--backend", "openai", "--base-url", server.base_url, "--model", "x", "--num-frames", "2"]
        _caption(
            clips, out, *args, "--api-key-env", "VIDCAP_TEST_KEY", "--variants", "short,dense", VIDCAP_TEST_KEY="sk-t"
        )
        hits = list(server.hits)
    finally:
        server.stop()
    df = pd.read_parquet(out)
    assert len(df) == 6 and (df["status"] == "ok").all(), df["error"].tolist()
    assert sorted(h.prompt for h in hits) == sorted([get_prompt("short").text, get_prompt("dense").text] * 6)
    assert all(len(h.images) == 2 for h in hits)
    for c in COLS:
        assert df[c].str.startswith("A caption").all() and (df[f"{c}_prompt_tokens"] == 10 + 85 * 2).all()


def test_a_name_that_does_not_exist_is_one_sentence(clips, tmp_path):
    proc = _caption(clips, tmp_path / "o.parquet", "--model", "fake", "--variants", "short,nope", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown variant 'nope'" in lines[0] and "dense" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"variants": ("short", "short")}, "twice"),
        ({"variants": ("short",), "prompt": "video"}, "--prompt"),
        ({"variants": ("short", "dense"), "heal": 1}, "--heal"),
    ],
)
def test_variants_that_cannot_work_are_refused(options, says):
    with pytest.raises(UsageError, match=says):
        VariantPlan.of(CaptionOptions(**options))


def test_limits_and_columns():
    plan = VariantPlan.of(CaptionOptions(variants=("short", "dense", "pllava-short"), max_new_tokens=None))
    assert plan is not None and plan.limits == (48, 384, 128)  # each prompt's own limit
    capped = VariantPlan.of(CaptionOptions(variants=("short", "dense"), max_new_tokens=100))
    assert capped is not None and capped.limits == (48, 100)  # --max-new-tokens caps the longer ones
    assert column("pllava-short") == "caption_pllava_short"
    assert "caption_dense_completion_tokens" in plan.columns


def test_bench_compares_with_the_longest_variant():
    from vidcap.bench.variants import format_variants, single_variant

    assert single_variant(VariantPlan.of(CaptionOptions(variants=("short", "dense"), max_new_tokens=150))) == "dense"
    assert single_variant(VariantPlan.of(CaptionOptions(variants=("short", "dense"), max_new_tokens=8))) == "dense"
    report = {"variants": ["short", "dense"], "single": "dense", "cost_ratio": 1.14, "tokens_per_s": [548, 636],
              "prefill_s": [2.8, 3.0], "decode_steps": [448, 533], "shared": {"clips_shared": 48}}  # fmt: skip
    assert "1.14x the time per clip" in format_variants(report)[0]


def test_resume_after_kill_gives_every_row_once_and_other_variants_are_refused(clips, tmp_path):
    out = tmp_path / "k.parquet"
    parts = out.with_name(out.name + ".parts")
    args = [*VIDCAP, "caption", str(clips / "m.csv"), "-o", str(out), "--model", "fake", "--variants", "short,dense",
            "--workers", "1", "-q", "--batch-size", "1", "--part-rows", "1"]  # fmt: skip
    proc = subprocess.Popen(
        args, env=dict(os.environ, VIDCAP_FAKE_DELAY="0.4"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    t0 = time.time()
    while not (parts.exists() and list(parts.glob("part-*.parquet"))):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.time() - t0 < 120, "no part file appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    other = _caption(clips, out, "--model", "fake", "--variants", "short", check=False)
    assert other.returncode != 0 and "Traceback" not in other.stderr  # other variants: refused, not mixed
    done = _caption(clips, out, "--model", "fake", "--variants", "short,dense")
    assert "skipped (already done)" in done.stderr
    df = pd.read_parquet(out)
    assert len(df) == 6 and df["path"].is_unique and (df["status"] == "ok").all()
    clean = tmp_path / "clean.parquet"
    _caption(clips, clean, "--model", "fake", "--variants", "short,dense")
    want = pd.read_parquet(clean).set_index("path")[COLS]
    pd.testing.assert_frame_equal(df.set_index("path")[COLS].loc[want.index], want)


# -- tiny real models through the engine ------------------------------------------------------------------

NEW = 8


@pytest.fixture
def torch():
    pytest.importorskip("transformers")
    return pytest.importorskip("torch")


@pytest.mark.parametrize("family", ["pllava", "qwen2.5-vl"])
def test_tiny_model_cli_fills_the_columns_through_the_engine(torch, tiny_model, clips, tmp_path, family):
    out = tmp_path / f"{family}.parquet"
    model = tiny_model(family)
    proc = _caption(clips, out, "--model", model, "--variants", "short,dense", "--max-new-tokens", NEW, "-b", "4")
    assert "--variants: 6 clips prefilled their video once" in proc.stderr, proc.stderr
    df = pd.read_parquet(out)
    assert len(df) == 6 and (df["status"] == "ok").all(), df["error"].tolist()
    for c in COLS:
        assert df[f"{c}_completion_tokens"].between(1, NEW).all()
        assert df[f"{c}_finish_reason"].isin(["stop", "length"]).all()
    assert (df["caption_dense_prompt_tokens"] > df["caption_short_prompt_tokens"]).all()
    engine = json.loads(Path(f"{out}.run.json").read_text())["summary"]["engine"]
    assert engine["fast_path"] and engine["variants"]["clips_shared"] == 6, engine
    assert engine["variants"]["prefill_tokens_saved"] > 0 and engine["variants"]["full_prefill_clips"] == 0


def _family_items(backend, clips, names):
    from vidcap.backends.base import CaptionRequest
    from vidcap.frames import sample_frames
    from vidcap.prompts.caption import get_prompt, render

    specs = [get_prompt(n) for n in names]
    fams, alone = [], []
    for c in sorted(clips.glob("v*.mp4")):
        fr = sample_frames(c, backend.preset.num_frames, backend.preset.positions)
        meta = {"path": str(c), "max_new": NEW}
        reqs = [CaptionRequest(fr.frames, render(s), False, {**meta, "question": s.question}) for s in specs]
        fams.append(backend.prepare_variants(reqs))
        alone += [backend.prepare_item(r) for r in reqs]
    return fams, alone


def _run(backend, items, slots):
    from vidcap.engine import Engine, ListSource

    engine = Engine(
        backend.model,
        slots=slots,
        max_new_tokens=NEW,
        eos=[],
        pad_id=backend.pad_id,
        device=backend.device,
        dtype=backend.dtype,
        collate=backend._collate_right,
    )
    got: dict = {}
    for out in engine.run(ListSource(list(enumerate(items)))):
        assert out.key not in got, "a variant came back twice"
        got[out.key] = out
    return engine, got


@pytest.mark.parametrize(
    ("family", "names", "shared"),
    [
        ("pllava", ("short", "dense"), True),
        ("qwen2.5-vl", ("short", "dense"), True),
        ("qwen3-vl", ("short", "dense"), True),
        ("internvl3", ("short", "dense"), True),
        ("llava-next", ("short", "dense"), True),
        ("pllava", ("pllava", "pllava-short"), False),  # the seed's PLLaVA prompts sit before the video
    ],
)
def test_shared_prefill_gives_the_tokens_of_each_variant_alone(torch, tiny_model, clips, family, names, shared):
    from vidcap.backends.registry import make_backend, resolve_model

    backend = make_backend(resolve_model(str(tiny_model(family))), CaptionOptions(max_new_tokens=NEW, batch_size=4))
    backend.setup("cpu")
    torch.manual_seed(1)  # larger weights: the tiny model's greedy tokens then vary from step to step
    for p in backend.model.model.language_model.parameters():
        if p.dim() == 2:
            p.data.normal_(0, 0.2)
    backend.model.lm_head.weight.data.normal_(0, 1.0)
    fams, alone = _family_items(backend, clips, names)
    engine, got = _run(backend, fams, slots=5)  # 5 slots: families of 2 wait for room, slots are refilled
    _, want = _run(backend, alone, slots=4)
    assert len(got) == len(alone)
    for key, out in got.items():
        assert out.finish == "length" and out.tokens == want[2 * key.key + key.index].tokens, key
    assert len({tuple(o.tokens) for o in got.values()}) > 2, "the check needs tokens that differ"
    v = engine.stats.summary()["variants"]
    if shared:
        assert v["clips_shared"] == len(fams) and v["full_prefill_clips"] == 0 and v["prefill_tokens_saved"] > 0
    else:
        assert v["clips_shared"] == 0 and v["full_prefill_clips"] == len(fams)
