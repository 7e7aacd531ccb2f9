"""Frames by time (--fps/--max-frames), the Qwen pixel budgets computed on the decode workers, the Qwen3-VL
and InternVL3 presets, and fine-tune ids that resolve to their base preset."""

import re

import numpy as np
import pytest
from media import make_video, read_index

from vidcap.backends.base import CaptionOptions, CaptionRequest
from vidcap.backends.registry import make_backend, resolve_model
from vidcap.errors import UsageError
from vidcap.frames import sample_frames
from vidcap.frames.positions import time_indices
from vidcap.stages.caption import CaptionStage, frame_meta


@pytest.mark.parametrize(
    "total,fps,rate,cap,want",
    [(150, 30, 2, 768, 10), (150, 30, 2, 6, 6), (300, 24, 1, 768, 12), (20, 30, 2, 768, 4), (2, 30, 2, 768, 4)],
)
def test_time_indices_follow_the_clip_duration(total, fps, rate, cap, want):
    idx = time_indices(total, fps, rate, cap)
    assert len(idx) == want and idx[0] == 0 and idx[-1] == total - 1 and idx == sorted(idx)


def test_decoded_frames_are_the_ones_at_those_times(tmp_path):
    clip = make_video(tmp_path / "c.mp4", 75, (160, 120), fps=25)  # 3 s
    fr = sample_frames(str(clip), 768, "uniform", rate=2.0)
    assert fr.indices == time_indices(75, 25.0, 2.0, 768) and len(fr.indices) == 6
    assert [read_index(f) for f in fr.frames] == fr.indices


def test_presets_and_fine_tunes_resolve_offline():
    q3 = resolve_model("qwen3-vl-8b")
    assert q3.model_id == "Qwen/Qwen3-VL-8B-Instruct" and q3.params["fps"] == 2.0
    assert resolve_model("internvl3-8b").model_id == "OpenGVLab/InternVL3-8B-hf"
    base = resolve_model("qwen2.5-vl-7b")
    for ft in ("Skywork/SkyCaptioner-V1", "omni-research/Tarsier2-Recap-7b"):
        p = resolve_model(ft)
        assert (p.model_id, p.backend, p.num_frames, p.params) == (ft, base.backend, base.num_frames, base.params)


def test_missing_weights_name_the_hub_id(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    stage = CaptionStage(resolve_model("qwen3-vl-8b"), CaptionOptions())
    with pytest.raises(UsageError, match=r"Qwen/Qwen3-VL-8B-Instruct.*hf download"):
        stage.resolve("cpu")


def test_stage_picks_frames_by_time_or_count():
    q3 = resolve_model("qwen3-vl-8b")
    assert CaptionStage(q3, CaptionOptions()).rate == 2.0
    assert CaptionStage(q3, CaptionOptions(max_frames=16)).num_frames == 16
    fixed = CaptionStage(q3, CaptionOptions(num_frames=8))
    assert fixed.rate is None and fixed.num_frames == 8
    q25 = CaptionStage(resolve_model("qwen2.5-vl-7b"), CaptionOptions(fps=1.0, max_frames=32))
    assert (q25.rate, q25.num_frames, q25.fingerprint()["fps"]) == (1.0, 32, 1.0)
    with pytest.raises(UsageError, match="--max-frames goes with --fps"):
        CaptionStage(resolve_model("internvl3-8b"), CaptionOptions(max_frames=4))
    with pytest.raises(UsageError, match="--fps must be above 0"):
        CaptionStage(q3, CaptionOptions(fps=0.0))


def _item(tiny_model, family, clip, **opts):
    path = tiny_model(family)
    stage = CaptionStage(resolve_model(str(path)), CaptionOptions(**opts))
    backend = make_backend(stage.preset, stage.options)
    backend.load_preprocessor(path)
    fr = sample_frames(str(clip), stage.num_frames, stage.preset.positions, rate=stage.rate)
    req = CaptionRequest(fr.frames, "Describe.", False, frame_meta(str(clip), fr))
    return backend, fr, backend.prepare_one(req)


def test_qwen3_frame_times_reach_the_prompt(tiny_model, tmp_path):
    clip = make_video(tmp_path / "c.mp4", 90, (160, 120), fps=30)  # 3 s at the preset's 2 fps: 6 frames
    backend, fr, item = _item(tiny_model, "qwen3-vl", clip)
    assert len(fr.indices) == 6
    text = backend.tokenizer.decode(item["input_ids"][0])
    times = [float(t) for t in re.findall(r"<([0-9.]+) seconds>", text)]
    pairs = [(fr.indices[i] + fr.indices[i + 1]) / 2 / 30 for i in range(0, 6, 2)]  # one time per 2 frames
    assert times == pytest.approx([round(p, 1) for p in pairs], abs=0.051)


@pytest.mark.parametrize("family", ["qwen2.5-vl", "qwen3-vl"])
@pytest.mark.parametrize("size", [(160, 120), (96, 200)])
def test_worker_resize_gives_the_processors_own_grid(tiny_model, tmp_path, family, size):
    """Frames sized on the decode workers come out of the processor with the grid it would have chosen."""
    clip = make_video(tmp_path / "c.mp4", 48, size)
    backend, fr, item = _item(tiny_model, family, clip, num_frames=8)
    assert backend.geometry is not None
    own = backend.processor.video_processor(videos=[fr.frames], do_sample_frames=False, return_tensors="pt")
    assert item["video_grid_thw"].tolist() == own["video_grid_thw"].tolist()
    a, b = item["pixel_values_videos"].float(), own["pixel_values_videos"].float()
    assert a.shape == b.shape and (a - b).abs().mean() < 0.1  # area vs bicubic resampling: close, not equal


def test_pixel_budgets_per_frame_and_per_clip(tiny_model, tmp_path):
    clip = make_video(tmp_path / "c.mp4", 48, (320, 240))
    _, _, full = _item(tiny_model, "qwen2.5-vl", clip, num_frames=8)
    _, _, frame = _item(tiny_model, "qwen2.5-vl", clip, num_frames=8, max_pixels=56 * 56)
    _, _, clip_b = _item(tiny_model, "qwen3-vl", clip, num_frames=8, total_pixels=8 * 64 * 64)
    assert int(np.prod(frame["video_grid_thw"][0][1:].tolist())) * 14 * 14 <= 56 * 56
    assert int(np.prod(full["video_grid_thw"][0][1:].tolist())) > int(np.prod(frame["video_grid_thw"][0][1:].tolist()))
    h, w = clip_b["video_grid_thw"][0][1:].tolist()
    assert h * 16 * w * 16 <= int(4096 * 1.05)  # the clip's budget shared by 8 frames, floored at the minimum
