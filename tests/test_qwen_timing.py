"""Qwen2.5-VL gets the real spacing of the sampled frames (its temporal positions), not the processor's
default frame rate."""

import pytest
from media import make_video

pytest.importorskip("transformers")


@pytest.mark.parametrize("fps,n_frames", [(24, 96), (30, 300), (10, 25)])
def test_second_per_grid_follows_the_sampled_frames(tiny_model, tmp_path, fps, n_frames):
    from vidcap.backends.base import CaptionOptions
    from vidcap.backends.registry import make_backend, resolve_model
    from vidcap.frames import sample_frames
    from vidcap.stages.caption import CaptionStage, frame_meta

    path = tiny_model("qwen2.5-vl")
    stage = CaptionStage(resolve_model(str(path)), CaptionOptions(num_frames=8))
    backend = make_backend(stage.preset, stage.options)
    backend.load_preprocessor(path)
    clip = make_video(tmp_path / "c.mp4", n_frames, (160, 120), fps=fps)
    frames = sample_frames(str(clip), 8, "uniform")
    from vidcap.backends.base import CaptionRequest

    item = backend.prepare_one(CaptionRequest(frames.frames, "Describe.", False, frame_meta(str(clip), frames)))
    # two frames per temporal grid: the seconds they span at the sampled rate (8 frames over the clip)
    want = 2 / (8 / n_frames * fps)
    assert item["second_per_grid_ts"].tolist() == pytest.approx([want] * len(item["second_per_grid_ts"]))
