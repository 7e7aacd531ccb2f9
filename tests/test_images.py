"""Issue 12: manifests that list still images as well as videos, through the CLI for every command that
reads a manifest: caption (fake backend and the API backend against a local server), motion, report.
Images are real files written by Pillow plus a frame of real sample footage; kinds are decided by content
(a PNG named .mp4 is an image, a video named .jpg is a video)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
import pytest
from clirun import vidcap
from media import make_image, make_video, read_index, real_videos

pytestmark = pytest.mark.timeout(240)

KEY = "sk-vidcap-images-0c1d2e3f4a5b6c7d"
IMAGES = ("png", "jpg", "webp", "bmp", "tif", "png_as_mp4", "real_frame")
VIDEOS = ("clip_mp4", "clip_mkv", "video_as_jpg")


def _real_frame(dest: Path) -> tuple[int, int]:
    """Frame 10 of a real sample clip saved as JPEG; its (width, height)."""
    import av
    from PIL import Image

    clips = real_videos()
    src = next((clips[n] for n in ("vtest.avi", "Megamind.avi", "tree.avi", "bikes.mp4") if n in clips), None)
    if src is None:
        pytest.skip("no real sample footage here (apt-get install opencv-doc)")
    with av.open(str(src)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i == 10:
                arr = frame.to_ndarray(format="rgb24")
                break
    Image.fromarray(arr).save(dest, quality=92)
    return arr.shape[1], arr.shape[0]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    paths = {ext: make_image(root / f"still.{ext}", size=(160, 120), index=7) for ext in IMAGES[:5]}
    paths["png_as_mp4"] = make_image(root / "png_named.mp4", size=(160, 120), index=7, format="PNG")
    paths["real_frame"] = root / "real_frame.jpg"
    real_size = _real_frame(paths["real_frame"])
    paths["clip_mp4"] = make_video(root / "clip.mp4", n_frames=40, size=(96, 64))
    paths["clip_mkv"] = make_video(root / "clip.mkv", n_frames=24, size=(96, 64))
    paths["video_as_jpg"] = root / "video_named.jpg"
    shutil.copyfile(paths["clip_mp4"], paths["video_as_jpg"])
    names = list(IMAGES) + list(VIDEOS)
    pd.DataFrame({"name": names, "path": [paths[n].name for n in names]}).to_csv(root / "m.csv", index=False)
    return root, real_size


def by_name(out: Path) -> pd.DataFrame:
    df = pd.read_parquet(out)
    assert df["status"].eq("ok").all(), df[["name", "error"]]
    return df.set_index("name")


def test_caption_fake_one_output_with_images_and_videos(mixed):
    root, real_size = mixed
    out = root / "cap.parquet"
    vidcap("caption", root / "m.csv", "-o", out, "--model", "fake", "-q", "--workers", "1")
    df = by_name(out)
    assert list(df.index) == list(IMAGES) + list(VIDEOS)  # one output, both kinds, input order
    for n in IMAGES:
        row = df.loc[n]
        assert row["prompt"] == "image" and row["text"].startswith("A still image seen in 1 frames"), n
        assert list(row["frame_idx"]) == [0] and row["num_frames"] == 1 and row["fps"] == 0.0
        assert (row["width"], row["height"]) == (real_size if n == "real_frame" else (160, 120))
    for n in VIDEOS:
        row = df.loc[n]
        assert row["prompt"] == "video" and row["text"].startswith("A clip seen in 4 frames"), n
        assert len(row["frame_idx"]) == 4 and row["fps"] == 24.0
    assert df.loc["video_as_jpg", "text"] == df.loc["clip_mp4", "text"]  # decoded as what it is
    assert df.loc["png_as_mp4", "text"] == df.loc["png", "text"]  # lossless copies, same pixels


def test_a_prompt_the_user_chose_applies_to_images_too(mixed):
    root, _ = mixed
    out = root / "cap_user.parquet"
    vidcap(
        "caption",
        root / "m.csv",
        "-o",
        out,
        "--model",
        "fake",
        "-q",
        "--workers",
        "0",
        "--prompt",
        "video-f3-detail-3ex",
    )
    df = by_name(out)
    assert set(df["prompt"]) == {"video-f3-detail-3ex"}
    assert len(set(df["prompt_tokens"])) == 1  # the very same prompt text went to images and videos
    default = pd.read_parquet(root / "cap.parquet").set_index("name") if (root / "cap.parquet").exists() else None
    if default is not None:  # a different prompt reached the backend (the fake's text names its hash)
        assert df.loc["png", "text"] != default.loc["png", "text"]


def test_api_backend_sends_one_image_for_image_rows(mixed, tmp_path):
    import cv2
    from fake_openai_server import FakeOpenAIServer

    root, _ = mixed
    out = tmp_path / "api.parquet"
    with FakeOpenAIServer() as server:
        vidcap(
            "caption",
            root / "m.csv",
            "-o",
            out,
            "--backend",
            "openai",
            "--model",
            "x",
            "--base-url",
            server.base_url,
            "--api-key-env",
            "VIDCAP_IMG_KEY",
            "--num-frames",
            "3",
            "-q",
            "--workers",
            "0",
            VIDCAP_IMG_KEY=KEY,
        )
        hits = list(server.hits)
        assert server.problems() == []
    df = by_name(out)
    assert len(hits) == len(df)
    counts = sorted(len(h.images) for h in hits)
    assert counts == [1] * len(IMAGES) + [3] * len(VIDEOS)
    one = [h for h in hits if len(h.images) == 1]
    image_prompt = {h.prompt for h in one}
    video_prompt = {h.prompt for h in hits if len(h.images) == 3}
    assert len(image_prompt) == 1 and len(video_prompt) == 1 and image_prompt != video_prompt
    burned = [
        read_index(cv2.imdecode(np.frombuffer(h.images[0], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1])
        for h in one
        if h.images[0] and _readable(h.images[0])
    ]
    assert burned.count(7) >= 5  # the synthetic stills themselves were sent (the real frame has no index)
    assert set(df.loc[list(IMAGES), "prompt"]) == {"image"}
    assert len(set(df.loc[list(VIDEOS), "prompt"])) == 1 and "image" not in set(df.loc[list(VIDEOS), "prompt"])


def _readable(jpeg: bytes) -> bool:
    import cv2

    try:
        read_index(cast(np.ndarray, cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))[:, :, ::-1])
        return True
    except ValueError:
        return False


def test_motion_gives_images_static_with_a_note(mixed):
    root, _ = mixed
    out = root / "motion.parquet"
    proc = vidcap("motion", root / "m.csv", "-o", out, "-q", "--workers", "1", check=False)
    if proc.returncode == 2 and "No such command" in proc.stderr:
        pytest.skip("PENDING: `vidcap motion` is not in the CLI yet")
    assert proc.returncode == 0, proc.stderr
    df = by_name(out)
    for n in IMAGES:
        assert df.loc[n, "cmotion"] == "static" and "still" in df.loc[n, "note"], n
    for n in VIDEOS:
        assert "still" not in str(df.loc[n, "note"]), n
    assert df.loc["clip_mp4", "cmotion"] == df.loc["video_as_jpg", "cmotion"]


def test_report_shows_the_images(mixed):
    root, _ = mixed
    cap = root / "cap_report.parquet"
    vidcap("caption", root / "m.csv", "-o", cap, "--model", "fake", "-q", "--workers", "0")
    html = root / "page.html"
    vidcap("report", cap, "-o", html, "--sample", "0", "--workers", "0")
    page = html.read_text()
    assert page.count("<figcaption>image</figcaption>") == len(IMAGES)
    assert page.count("data:image/jpeg;base64,") >= len(IMAGES) + len(VIDEOS)
