"""PLLaVA sees the pixels the seed's captioner saw: vidcap's pixel values against the seed's chain written
here independently with PIL and torchvision (Open-Sora's Resize(672), PllavaProcessor's
resize_crop_longshort, transformers 4.40's PIL CLIP processor), for landscape, portrait, small and square
frames."""

import json
from typing import TYPE_CHECKING

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tv = pytest.importorskip("torchvision")
pytest.importorskip("transformers")

from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from vidcap.backends.base import CaptionOptions, CaptionRequest
from vidcap.backends.registry import make_backend, resolve_model

if TYPE_CHECKING:
    from torch import Tensor

SIZES = [(720, 1280), (1080, 1920), (1920, 1080), (480, 640), (336, 336)]


def seed_chain(frame: np.ndarray, mean, std) -> "Tensor":
    """One frame through the seed's steps, as the seed's libraries do them."""
    img = tv.transforms.Resize(672)(Image.fromarray(frame))  # Open-Sora caption_pllava.py (PIL: bilinear)
    h, w = img.height, img.width
    rate = max(h, w) / min(h, w)
    edge = max(min(min(h, w), int(min(640, max(h, w)) / rate)), 336)  # PllavaProcessor.resize_crop_longshort
    target = (int(edge * rate), edge) if h > w else (edge, int(edge * rate))
    img = TF.resize(img, [edge], interpolation=InterpolationMode.BICUBIC)
    arr = np.array(img)
    extra = (max(arr.shape[:2]) - max(target)) // 2
    lo = extra // 2
    arr = arr[lo : lo + max(target)] if arr.shape[0] > arr.shape[1] else arr[:, lo : lo + max(target)]
    img = TF.resize(Image.fromarray(arr), [336], interpolation=InterpolationMode.BICUBIC)  # CLIP (PIL, 4.40)
    arr = np.array(img)
    top, left = (arr.shape[0] - 336) // 2, (arr.shape[1] - 336) // 2  # transformers' centre crop floors
    x = torch.from_numpy(arr[top : top + 336, left : left + 336].copy()).permute(2, 0, 1)
    x = (x.double() / 255).float()
    return TF.normalize(x, mean, std)


@pytest.fixture(scope="module")
def backend(tiny_model):
    path = tiny_model("pllava")
    b = make_backend(resolve_model(str(path)), CaptionOptions(max_new_tokens=2))
    b.load_preprocessor(path)
    cfg = json.loads((path / "preprocessor_config.json").read_text())
    return b, cfg["image_mean"], cfg["image_std"]


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_pixels_equal_the_seed_chain(backend, size):
    b, mean, std = backend
    rng = np.random.default_rng(sum(size))
    h, w = size
    # smooth content plus noise: resampling filters differ most on edges, so both are there
    yy, xx = np.mgrid[0:h, 0:w]
    base = 127 + 100 * np.sin(xx / 37.0)[..., None] * np.cos(yy / 23.0)[..., None] * np.array([1, -0.5, 0.7])
    frames = np.stack(
        [np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8) for _ in range(b.num_frames)]
    )
    got = b.prepare_one(CaptionRequest(frames, "Describe."))["pixel_values"]
    want = torch.stack([seed_chain(f, mean, std) for f in frames])
    assert got.shape == want.shape == (b.num_frames, 3, 336, 336)
    assert (got - want).abs().max().item() < 1e-5
