"""A long test video with known cut points, concatenated from real footage (`vidcap.scenes`' evaluation).

Each `Segment` is a stretch of a real clip, optionally mirrored, zoomed or slowly panned (a crop window that
moves), resampled to one frame rate and size, and it begins with a hard cut, a dissolve or a fade through
black. `build` writes the H.264 file and returns the true boundaries: every join between segments that is a
real change of shot, plus the cuts inside the source clips themselves (SOURCE_CUTS, checked by eye). A
segment that continues its predecessor (same clip, same look, the next second) is a join and no boundary:
a detector that fires there is wrong.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Shot changes inside the sample clips, as frame numbers of their own (first frame of the new shot), found by
# looking at every frame around each candidate (docs/scenes.md).
SOURCE_CUTS = {
    "Megamind.avi": (98, 154, 200),
    "bikes.mp4": (30, 76, 137, 187, 242),
    "bigbuckbunny.mp4": (),
    "vtest.avi": (),
    "carphone_pristine.mp4": (),
}


@dataclass(frozen=True)
class Segment:
    source: str  # a path; its file name keys SOURCE_CUTS
    start: float  # seconds into the source
    end: float
    flip: bool = False  # mirrored left-right
    zoom: float = 1.0  # the crop is 1/zoom of the frame (centred, or moving with `pan`)
    pan: float = 0.0  # the crop moves this fraction of the free width over the segment (a slow pan)
    transition: str = "cut"  # how it begins: cut, dissolve, fade (through black), join (continues the last)
    length: float = 0.0  # seconds of the dissolve or fade


@dataclass(frozen=True)
class Boundary:
    start: float  # seconds in the built video: the first frame of the new shot (of a transition: its first)
    end: float  # == start for a hard cut; the last frame of a transition
    kind: str  # cut, dissolve, fade, source (a cut inside the source clip)


def _source_frames(seg: Segment, fps: float) -> Iterator[tuple[np.ndarray, int]]:
    """(frame RGB, source frame number) at `fps` over [start, end) of the source, nearest earlier frame."""
    import av

    with av.open(seg.source) as c:
        s = c.streams.video[0]
        rate = float(s.average_rate or s.guessed_rate or 25)
        n_out = int(round((seg.end - seg.start) * fps))
        wanted = [int(math.floor((seg.start + j / fps) * rate + 1e-6)) for j in range(n_out)]
        j, last = 0, None
        for i, frame in enumerate(c.decode(s)):
            if j >= n_out:
                break
            if i < wanted[j]:
                continue
            last = frame.to_ndarray(format="rgb24")
            while j < n_out and wanted[j] <= i:
                yield last, i
                j += 1
        while last is not None and j < n_out:  # the clip ended early: hold its last frame
            yield last, wanted[j]
            j += 1


def _look(img: np.ndarray, seg: Segment, progress: float, size: tuple[int, int]) -> np.ndarray:
    """The frame cropped to the output's shape (zoom, pan), mirrored, resized to `size` (w, h)."""
    import cv2

    h, w = img.shape[:2]
    aspect = size[0] / size[1]
    cw, ch = (w, int(w / aspect)) if w / h < aspect else (int(h * aspect), h)
    cw, ch = int(cw / seg.zoom), int(ch / seg.zoom)
    free_x, free_y = w - cw, h - ch
    x = int(free_x * (0.5 + seg.pan * (progress - 0.5))) if seg.pan else free_x // 2
    crop = img[free_y // 2 : free_y // 2 + ch, max(0, min(x, free_x)) :][:, :cw]
    if seg.flip:
        crop = crop[:, ::-1]
    return cv2.resize(np.ascontiguousarray(crop), size, interpolation=cv2.INTER_AREA)


def build(segments: list[Segment], out, size: tuple[int, int] = (640, 360), fps: int = 25) -> list[Boundary]:
    """Write the concatenation to `out` (H.264 MP4) and return its true boundaries, in time order."""
    import av

    truth: list[Boundary] = []
    held: deque = deque()  # the last frames written late, so the next segment can blend into them
    t = 0  # output frames so far (written or held)
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "20"}

        def emit(img: np.ndarray) -> None:
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            container.mux(stream.encode(frame))

        for k, seg in enumerate(segments):
            blend = int(round(seg.length * fps)) if seg.transition in ("dissolve", "fade") and k else 0
            while len(held) > blend:
                emit(held.popleft())
            first = t - len(held)
            if k and seg.transition != "join":
                end = first + max(blend - 1, 0)
                truth.append(Boundary(first / fps, end / fps, seg.transition))
            cuts = {c for c in SOURCE_CUTS.get(Path(seg.source).name, ())}
            n = int(round((seg.end - seg.start) * fps))
            prev_src = None
            for j, (img, src) in enumerate(_source_frames(seg, fps)):
                out_img = _look(img, seg, j / max(1, n - 1), size)
                if prev_src is not None and any(prev_src < c <= src for c in cuts):
                    truth.append(Boundary((first + j) / fps, (first + j) / fps, "source"))
                prev_src = src
                if held and j < blend:
                    a = (j + 1) / (blend + 1)
                    old = held.popleft().astype(np.float32)
                    if seg.transition == "fade":  # out to black over the first half, in over the second
                        mix = old * max(0.0, 1 - 2 * a) + out_img.astype(np.float32) * max(0.0, 2 * a - 1)
                    else:
                        mix = old * (1 - a) + out_img.astype(np.float32) * a
                    emit(mix.clip(0, 255).astype(np.uint8))
                    continue
                held.append(out_img)
                t += 1
                if len(held) > fps * 2:
                    emit(held.popleft())
        while held:
            emit(held.popleft())
        container.mux(stream.encode(None))
    return merge_close(sorted(truth, key=lambda b: b.start), MIN_APART)


MIN_APART = 1.0  # seconds: boundaries closer than this (a clip's own cut inside a dissolve) count as one


def merge_close(truth: list[Boundary], apart: float) -> list[Boundary]:
    """Boundaries less than `apart` seconds apart as one boundary spanning both (no detector with a
    minimum scene length can tell them apart, and either detection is right)."""
    out: list[Boundary] = []
    for b in truth:
        if out and b.start - out[-1].end < apart:
            last = out[-1]
            out[-1] = Boundary(
                last.start, max(last.end, b.end), last.kind if last.kind == b.kind else f"{last.kind}+{b.kind}"
            )
        else:
            out.append(b)
    return out


def match(truth: list[Boundary], found: list[float], tolerance: float) -> tuple[int, int, int]:
    """(true positives, detected, true) with each detection matched to at most one boundary: a detection
    counts when it falls in [start - tolerance, end + tolerance] of a boundary not yet matched."""
    used = [False] * len(truth)
    hits = 0
    for f in sorted(found):
        for i, b in enumerate(truth):
            if not used[i] and b.start - tolerance <= f <= b.end + tolerance:
                used[i] = True
                hits += 1
                break
    return hits, len(found), len(truth)
