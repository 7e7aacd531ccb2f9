"""What Open-Sora's own code sees of a file: the extension lists its loader accepts, and the frame size, fps and
rotation that `datautil --info` and the training loader read (stored frames, never rotated for display).

The lists are the same in Open-Sora v1.2.0, v1.3 and v2.0 (`opensora/datasets/utils.py` VID_EXTENSIONS, and
torchvision's IMG_EXTENSIONS for images), so the export has no version switch. A file is a video or an image
by its extension alone (`VideoTextDataset.get_type`); anything else stops the loader with
`AssertionError: Unsupported file format`.
- a video is read with PyAV (`read_video(path, backend="av")`): the stored frame size, fps is the stream's
  `average_rate` (whatever the file holds: a JPEG named `.mp4` reads as FFmpeg's jpeg_pipe at 25 fps);
  the display matrix (a phone's portrait clip) is not applied.
- an image is read with Pillow (`pil_loader`, `get_image_info`): its stored size, EXIF orientation not applied;
  fps is NaN.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image

from .frames.container import av_module

VID_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision 0.18
EXIF_ORIENTATION = 0x0112
PROBE_THREADS = 8


@dataclass(frozen=True)
class View:
    """A file as Open-Sora's loader decodes it."""

    height: int
    width: int
    fps: float  # NaN for an image (as --info writes it)
    turned: str  # how a viewer turns the stored frames ("" for not at all)
    error: str = ""  # why the file cannot be read at all


def kind(path: str) -> str | None:
    """'video', 'image', or None for an extension the loader refuses."""
    ext = os.path.splitext(str(path))[1].lower()
    if ext in VID_EXTENSIONS:
        return "video"
    if ext in IMG_EXTENSIONS:
        return "image"
    return None


def unsupported(path: str) -> str:
    ext = os.path.splitext(str(path))[1].lower() or "(no extension)"
    return (
        f"unsupported_format: Open-Sora's loader reads videos {', '.join(VID_EXTENSIONS)} and images "
        f"{', '.join(IMG_EXTENSIONS)} by extension, not '{ext}'"
    )


def view(path: str) -> View:
    """The stored size, fps and display rotation of `path` as Open-Sora reads it."""
    try:
        return _image(path) if kind(path) == "image" else _video(path)
    except Exception as exc:  # noqa: BLE001 (any decoder failure is this row's reason)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return View(0, 0, math.nan, "", text.replace(str(path), "").strip() or type(exc).__name__)


def views(paths: list[str]) -> list[View]:
    """`view` of each path (threads: PyAV and Pillow release the GIL while they decode)."""
    if len(paths) < 2:
        return [view(p) for p in paths]
    with ThreadPoolExecutor(min(PROBE_THREADS, len(paths))) as pool:
        return list(pool.map(view, paths))


def _video(path: str) -> View:
    av = av_module()
    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate
        frame = next(container.decode(stream))
        turn = round((getattr(frame, "rotation", 0) or 0) / 90) % 4 * 90
        fps = float(rate) if rate is not None else math.nan
        return View(int(frame.height), int(frame.width), fps, f"display matrix {turn} degrees" if turn else "")


def _image(path: str) -> View:
    with open(path, "rb") as fh, Image.open(fh) as img:
        img.convert("RGB")  # get_image_info decodes it; a truncated file fails here as it does there
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
        width, height = img.size
    return View(int(height), int(width), math.nan, f"EXIF orientation {orientation}" if orientation != 1 else "")
