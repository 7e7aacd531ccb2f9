"""vidcap's engine (continuous batching, static KV cache, shared prefix) against transformers' generate()
on the tiny model of every family: same greedy tokens with different prompt lengths, EOS at different
steps and slots refilled mid-run; out-of-memory and engine failures lose and double no row."""

import json
import threading
from dataclasses import replace

import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from clirun import vidcap
from media import make_video

from vidcap.backends.base import CaptionOptions, CaptionRequest
from vidcap.backends.registry import make_backend, resolve_model
from vidcap.engine import Engine, ListSource
from vidcap.engine.lm import DecoderLM
from vidcap.frames import sample_frames
from vidcap.prompts.caption import get_prompt, render

FAMILIES = ["pllava", "llava-next", "qwen2-vl", "llava-onevision", "qwen3-vl", "internvl3"]
NEW = 10


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine_clips")
    sizes = [(160, 120), (96, 128), (200, 112), (128, 128), (176, 144)]
    return [make_video(root / f"c{i}.mp4", 24 + 4 * i, size) for i, size in enumerate(sizes)]


_cache: dict = {}


def backend_for(tiny_model, family):
    if family not in _cache:
        preset = resolve_model(str(tiny_model(family)))
        backend = make_backend(preset, CaptionOptions(max_new_tokens=NEW, batch_size=2))
        backend.setup("cpu")
        _cache[family] = backend
    return _cache[family]


def requests(backend, clips):
    """Five clips, one an image, with prompts of different lengths (the seed's long prompt for most, so
    PLLaVA shares a prefix, and a short one that cannot use it)."""
    preset = backend.preset
    long = render(get_prompt(preset.prompt or "video"), "")
    reqs = [
        CaptionRequest(sample_frames(c, preset.num_frames, preset.positions).frames, long, meta={"path": str(c)})
        for c in clips
    ]
    reqs[4].prompt = "Say what happens."
    reqs[3] = CaptionRequest(reqs[3].frames[:1], long, is_image=True)
    return reqs


def reference(backend, items, eos):
    """generate() one clip at a time (no padding): the tokens up to and including the first EOS."""
    cfg = backend.generation_config()
    cfg.eos_token_id = sorted(eos) or None
    out = []
    for item in items:
        prepared = backend.collate([item])
        inputs = {k: v.to(backend.device) if hasattr(v, "to") else v for k, v in prepared.inputs.items()}
        n = inputs["input_ids"].shape[1]
        with torch.inference_mode():
            ids = backend.model.generate(**inputs, generation_config=cfg)[0, n:].tolist()
        cut = next((i + 1 for i, t in enumerate(ids) if t in eos), len(ids))
        out.append(ids[:cut])
    return out


def run_engine(backend, items, eos, slots=2, **kw):
    engine = Engine(
        backend.model,
        slots=slots,
        max_new_tokens=NEW,
        eos=sorted(eos),
        pad_id=backend.pad_id,
        device=backend.device,
        dtype=backend.dtype,
        collate=backend._collate_right,
        **kw,
    )
    got = {}
    for out in engine.run(ListSource(list(enumerate(items)))):
        assert out.key not in got, "an item came back twice"
        got[out.key] = out
    assert sorted(got) == list(range(len(items))), "an item never came back"
    return engine, [got[i] for i in range(len(items))]


@pytest.mark.parametrize("family", FAMILIES)
def test_engine_equals_generate_token_for_token(tiny_model, clips, family):
    backend = backend_for(tiny_model, family)
    items = [backend.prepare_item(r) for r in requests(backend, clips)]
    assert len({int(it["input_ids"].shape[1]) for it in items}) >= 2, "prompts of different lengths"
    full = reference(backend, items, set())  # every caption NEW tokens long
    # EOS at different steps: tokens that clip 0 makes at step 2 and clip 2 at step 6 end the captions
    eos = {full[0][2], full[2][6]}
    want = reference(backend, items, eos)
    assert len({len(w) for w in want}) >= 2
    engine, outs = run_engine(backend, items, eos)
    assert [o.tokens for o in outs] == want
    assert [o.finish for o in outs] == ["stop" if w[-1] in eos else "length" for w in want]
    s = engine.stats
    assert s.slots == 2 and s.prefills >= 3, "5 clips through 2 slots: slots were refilled mid-run"
    assert s.rows == 5 and s.fallback_rows == 0 and s.eager_steps == s.steps > 0
    if family == "pllava":  # the seed's system prompt is shared: its KV is computed once
        assert s.prefix_tokens >= 32
    if family == "qwen2-vl":  # its vision tower ran with batched attention and passed the check
        assert engine.vision.state == "on" and s.vision_attention.startswith("batched"), s.vision_attention


INTERPRETER_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import test_engine as t
backend = t.backend_for(lambda fam: {model!r}, {family!r})
items = [backend.prepare_item(r) for r in t.requests(backend, t.clip_list({clips!r}))]
want = t.reference(backend, items, set())
engine, outs = t.run_engine(backend, items, set(), slots=3, {engine_args})
assert {check}, engine.stats
assert [o.tokens for o in outs] == want
print("ENGINE_OK", {report})
"""


def clip_list(paths):
    return [__import__("pathlib").Path(p) for p in paths]


def in_interpreter(family: str, tiny_model, clips, engine_args: str, check: str, report: str) -> str:
    """Run the engine on `family`'s tiny model (with `engine_args`) in a subprocess under Triton's CPU
    interpreter (the GPU kernels on the CPU), assert `check` and equal tokens to generate() there, print
    `report`; returns its stdout, or the end of its stderr."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("triton")
    here = str(Path(__file__).parent)
    script = INTERPRETER_SCRIPT.format(
        tests=here,
        model=str(tiny_model(family)),
        family=family,
        clips=[str(c) for c in clips],
        engine_args=engine_args,
        check=check,
        report=report,
    )
    env = {
        **os.environ,
        "TRITON_INTERPRET": "1",
        "PYTHONPATH": os.pathsep.join([str(Path(here).parent / "src"), here, os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=900, check=False
    )
    return proc.stdout + proc.stderr[-3000:]


def test_triton_slot_attention_in_the_interpreter(tiny_model, clips):
    """The GPU's decode attention kernel (each slot read up to its length, joined with the shared prefix),
    run by Triton's CPU interpreter inside the engine: same tokens as generate()."""
    out = in_interpreter(
        "pllava",
        tiny_model,
        clips,
        engine_args='attention="triton"',
        check="engine.lm.triton and engine.stats.prefix_tokens > 0",
        report="engine.stats.attention",
    )
    assert "ENGINE_OK" in out, out


def test_fused_prefill_and_decode_kernels_in_the_interpreter(tiny_model, clips):
    """The GPU's fused RMSNorm, SiLU*up and rotary kernels (prefill and the decode step), run by Triton's
    CPU interpreter inside the engine on a Mistral-based model: same tokens as generate()."""
    out = in_interpreter(
        "llava-next",
        tiny_model,
        clips,
        engine_args='fused="triton"',
        check='engine.fused.state == "on" and engine.lm.fused and engine.fused.calls > 0',
        report="engine.stats.fused_kernels",
    )
    assert "ENGINE_OK" in out and "RMSNorm, SiLU*up, rotary" in out, out


def test_fused_kernels_stay_off_without_cuda(tiny_model, clips):
    backend = backend_for(tiny_model, "pllava")
    items = [backend.prepare_item(r) for r in requests(backend, clips)][:2]
    engine, _ = run_engine(backend, items, set())
    assert engine.fused.state == "off: no CUDA" and not engine.lm.fused
    assert engine.stats.summary()["fused_kernels"].startswith("transformers'")


def test_kernel_precompile_is_a_background_nicety(tiny_model):
    """The kernels compile during the load only on CUDA and with the model's sizes known (from the full
    config: a checkpoint's text_config may list only what differs from the defaults); a compile that fails
    (here: no CUDA behind a "cuda" device) ends quietly, and the checks after the load say why."""
    import torch

    from vidcap.engine.fused import precompile

    for family in FAMILIES:
        backend = backend_for(tiny_model, family)
        text = backend.text_config(tiny_model(family))
        assert text.hidden_size > 0 and text.num_attention_heads > 0, family

    def compiling() -> bool:
        return any(t.name == "vidcap-kernel-compile" for t in threading.enumerate())

    assert precompile(text, "cpu", torch.float32)() is None and not compiling()
    assert precompile(object(), "cuda", torch.bfloat16)() is None
    if not torch.cuda.is_available():
        precompile(text, "cuda", torch.bfloat16)()  # the thread's error is swallowed; join returns
        assert not compiling()


def test_default_batch_size():
    from vidcap.cli import default_batch_size

    assert default_batch_size("openai", None, 8) == 32
    assert default_batch_size("fake", None, 8) == default_batch_size("hf-pllava", "cpu", 8) == 8
    import torch

    assert default_batch_size("hf-llava", None, 8) == (64 if torch.cuda.device_count() else 8)


def test_engine_without_eos_and_with_drawn_lengths(tiny_model, clips):
    backend = backend_for(tiny_model, "qwen2-vl")
    items = [backend.prepare_item(r) for r in requests(backend, clips)]
    full = reference(backend, items, set())
    for item, n in zip(items, [3, 10, 1, 7, 5], strict=False):
        item["max_new"] = n
    _, outs = run_engine(backend, items, set(), slots=4, ignore_eos=True)
    assert [o.tokens for o in outs] == [f[:n] for f, n in zip(full, [3, 10, 1, 7, 5], strict=False)]


def test_prefill_out_of_memory_splits_without_losing_rows(tiny_model, clips, monkeypatch):
    backend = backend_for(tiny_model, "pllava")
    items = [backend.prepare_item(r) for r in requests(backend, clips)]
    want = reference(backend, items, set())
    real = Engine._prefill
    sizes = []

    def flaky(self, chunk, shared):
        sizes.append(len(chunk))
        if len(chunk) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, chunk, shared)

    monkeypatch.setattr(Engine, "_prefill", flaky)
    engine, outs = run_engine(backend, items, set(), slots=4)
    assert [o.tokens for o in outs] == want
    assert max(sizes) > 1 and engine.stats.oom_splits > 0


def test_cache_out_of_memory_takes_fewer_slots(tiny_model, clips, monkeypatch):
    backend = backend_for(tiny_model, "llava-next")
    items = [backend.prepare_item(r) for r in requests(backend, clips)]
    want = reference(backend, items, set())
    real = DecoderLM.__init__

    def small_gpu(self, parts, slots, *a, **kw):
        if slots > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        real(self, parts, slots, *a, **kw)

    monkeypatch.setattr(DecoderLM, "__init__", small_gpu)
    engine, outs = run_engine(backend, items, set(), slots=8)
    assert engine.stats.slots == 2 and [o.tokens for o in outs] == want


def test_engine_failure_hands_every_row_back(tiny_model, clips, monkeypatch):
    """A failure inside the engine mid-run: finished rows stay, the rest come back once as `fallback`."""
    backend = backend_for(tiny_model, "qwen2-vl")
    items = [backend.prepare_item(r) for r in requests(backend, clips)]
    real = DecoderLM.step
    calls = []

    def dies(self, b, between=None):
        calls.append(b)
        if len(calls) > 12:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(self, b, between)

    monkeypatch.setattr(DecoderLM, "step", dies)
    engine, outs = run_engine(backend, items, set())
    kinds = [o.finish for o in outs]
    assert "fallback" in kinds and "length" in kinds
    assert not engine.stats.fast_path and "illegal memory access" in engine.stats.reason


@pytest.mark.parametrize("family", ["llava-onevision", "pllava"])
def test_backend_results_equal_the_plain_path(tiny_model, clips, family):
    """Through the backend (what the stage calls): the engine's captions equal --baseline's, including a
    clip whose prompt neither shares PLLaVA's prefix nor fits the cache (it goes through generate())."""
    backend = backend_for(tiny_model, family)
    reqs = requests(backend, clips)
    reqs[2].prompt = reqs[0].prompt + " Mention the colours, the light, the weather and the time of day."
    fast = backend.caption(reqs)
    if family == "pllava":
        assert backend.engine_summary()["fallback_rows"] == 1
    backend.options = replace(backend.options, engine=False)
    try:
        assert backend.engine() is None
        plain = backend.caption(reqs)
    finally:
        backend.options = replace(backend.options, engine=True)
    assert [(r.text, r.completion_tokens, r.finish_reason, r.prompt_tokens) for r in fast] == [
        (r.text, r.completion_tokens, r.finish_reason, r.prompt_tokens) for r in plain
    ]
    assert backend.engine_summary()["fast_path"] is True


def test_cli_run_streams_rows_in_manifest_order(tiny_model, clips, tmp_path):
    """A real run: clips flow through 2 slots, bad files are recorded, the output follows the manifest,
    and run.json says the engine ran and how (decode steps, fast path)."""
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    paths = [str(clips[0]), str(bad), *map(str, clips[1:]), str(tmp_path / "missing.mp4")]
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": paths, "n": range(len(paths))}).to_csv(manifest, index=False)
    out = tmp_path / "out.parquet"
    vidcap(
        "caption",
        str(manifest),
        "-o",
        str(out),
        "--model",
        str(tiny_model("qwen2-vl")),
        "--batch-size",
        "2",
        "--max-new-tokens",
        "6",
        "--workers",
        "2",
        "--quiet",
    )
    df = pd.read_parquet(out)
    # a CSV manifest's cells come back as the text they were (docs/scale-out.md, "CSV cells are text")
    assert df["path"].tolist() == paths and df["n"].tolist() == [str(i) for i in range(len(paths))]
    assert df["status"].tolist() == ["ok", "failed", "ok", "ok", "ok", "ok", "failed"]
    meta = json.loads(out.with_name(out.name + ".run.json").read_text())
    engine = meta["summary"]["engine"]
    assert meta["summary"]["fast_path"] is True and engine["rows"] == 5 and engine["decode_steps"] > 0
    # the first caption, timed from the load and from vidcap's start; no kernels compile without CUDA
    assert 0 < engine["first_row_after_load_s"] <= engine["first_row_after_start_s"]
    assert engine["kernel_compile_wait_s"] < 1


@pytest.mark.parametrize("fast", [True, False])
def test_a_prompt_past_the_context_is_that_rows_error(tiny_model, clips, fast):
    """A prompt plus caption longer than the model's positions is a `context` error for that row (never a
    caption from positions the model was not built for), through the engine and through generate()."""
    from vidcap.engine.scheduler import max_positions

    backend = backend_for(tiny_model, "llava-next")
    limit = max_positions(backend.model)
    items = [backend.prepare_item(r) for r in requests(backend, clips)]
    items[1]["max_new"] = limit  # this row alone cannot fit
    backend.options = replace(backend.options, engine=fast)
    try:
        results = backend.caption_prepared(items)
    finally:
        backend.options = replace(backend.options, engine=True)
    assert results[1].error.startswith("context: ") and str(limit) in results[1].error
    assert [r.error for i, r in enumerate(results) if i != 1] == [""] * 4


def test_batched_vision_windows_equal_transformers():
    """Qwen2.5-VL's windowed vision attention, one SDPA call per piece length instead of one per piece,
    gives transformers' own output on a tower with edge windows of another length and full-attention layers."""
    import transformers as tf

    from vidcap.engine.vision import GroupedVision

    cfg = tf.Qwen2_5_VLConfig(
        vision_config={
            "depth": 3,
            "num_heads": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "out_hidden_size": 16,
            "window_size": 112,
            "fullatt_block_indexes": [1],
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        text_config={
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "intermediate_size": 32,
            "vocab_size": 64,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]},
        },
    )
    torch.manual_seed(0)
    model = tf.Qwen2_5_VLForConditionalGeneration(cfg).eval()
    grid = torch.tensor([[2, 12, 16], [1, 8, 20]])  # two clips; 12 and 8 patch rows leave shorter edge windows
    pixels = torch.randn(int(grid.prod(-1).sum()), 3 * 2 * 14 * 14)
    vision = GroupedVision(model)
    assert len(vision.mods) == 3 and vision.state == "unchecked"
    with torch.inference_mode():
        plain = model.model.visual(pixels, grid_thw=grid)
        vision.set(True)
        batched = model.model.visual(pixels, grid_thw=grid)
        vision.set(False)
    plain = getattr(plain, "pooler_output", plain)
    batched = getattr(batched, "pooler_output", batched)
    torch.testing.assert_close(batched, plain, rtol=1e-4, atol=1e-5)
    assert vision.state == "on" and vision.calls > 0, vision.summary()
    assert vision.summary().startswith("batched windows")
