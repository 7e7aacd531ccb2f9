"""Make the example clips and their manifest (`python examples/make_examples.py`): four short synthetic clips
that vidcap's README runs on a fresh checkout, with no download. Deterministic; the output is committed.

- pan.mp4: a textured scene sliding left (the camera pans right), 3 s
- zoom.mp4: the same scene growing from the centre (zoom in), 3 s
- static.mp4: the scene still, with a ball crossing it, 3 s
- still.png: one frame, as a photo in a video collection would be

Each is 320x180 at 24 fps, H.264 (yuv420p), well under 2 MB in all.
"""

from __future__ import annotations

import csv
from pathlib import Path

import av
import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
W, H, FPS, SECONDS = 320, 180, 24, 3


def scene(width: int, height: int) -> np.ndarray:
    """A fixed RGB landscape: sky, hills, a house and trees (enough texture for motion and a caption)."""
    rng = np.random.default_rng(7)
    img = np.zeros((height, width, 3), np.uint8)
    img[:] = (135, 190, 235)  # sky
    ys = (0.55 * height + 0.08 * height * np.sin(np.arange(width) / width * 9)).astype(int)
    for x, y in enumerate(ys):
        img[y:, x] = (70, 140, 60)  # hills
    for x in range(0, width, width // 12):
        top = int(ys[min(x, width - 1)]) - height // 8
        cv2.rectangle(img, (x + 3, top + height // 12), (x + 7, top + height // 6), (90, 60, 30), -1)
        cv2.circle(img, (x + 5, top + height // 16), height // 22, (40, 110, 40), -1)
    cx, cy = width // 2, int(0.62 * height)
    cv2.rectangle(img, (cx - width // 14, cy - height // 12), (cx + width // 14, cy + height // 10), (200, 60, 50), -1)
    roof = np.array([[cx - width // 12, cy - height // 12], [cx + width // 12, cy - height // 12], [cx, cy - height // 4]])
    cv2.fillPoly(img, [roof], (120, 40, 40))
    cv2.circle(img, (int(0.85 * width), int(0.18 * height)), height // 12, (250, 220, 90), -1)  # sun
    noise = rng.integers(-12, 13, img.shape)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


def pan(world: np.ndarray, i: int, n: int) -> np.ndarray:
    x = int((world.shape[1] - W) * i / (n - 1))
    return world[(world.shape[0] - H) // 2 : (world.shape[0] - H) // 2 + H, x : x + W]


def zoom(world: np.ndarray, i: int, n: int) -> np.ndarray:
    scale = 1.0 + 0.8 * i / (n - 1)
    h, w = int(world.shape[0] / scale), int(world.shape[1] / scale)
    y0, x0 = (world.shape[0] - h) // 2, (world.shape[1] - w) // 2
    return cv2.resize(world[y0 : y0 + h, x0 : x0 + w], (W, H), interpolation=cv2.INTER_AREA)


def static(world: np.ndarray, i: int, n: int) -> np.ndarray:
    frame = cv2.resize(world, (W, H), interpolation=cv2.INTER_AREA)
    x = int(20 + (W - 40) * i / (n - 1))
    cv2.circle(frame, (x, int(0.8 * H)), 10, (240, 240, 240), -1)
    return frame


def write(path: Path, make, world: np.ndarray) -> None:
    n = FPS * SECONDS
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"preset": "veryslow", "crf": "28", "threads": "1"}  # one thread: the same bytes each time
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(make(world, i, n)), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def main() -> None:
    (HERE / "clips").mkdir(exist_ok=True)
    wide = scene(2 * W, int(1.3 * H))
    write(HERE / "clips" / "pan.mp4", pan, wide)
    write(HERE / "clips" / "zoom.mp4", zoom, scene(W, H))
    write(HERE / "clips" / "static.mp4", static, scene(W, H))
    cv2.imwrite(str(HERE / "clips" / "still.png"), cv2.cvtColor(static(scene(W, H), 0, 2), cv2.COLOR_RGB2BGR))
    rows = [("clips/pan.mp4", "camera pans right"), ("clips/zoom.mp4", "camera zooms in"),
            ("clips/static.mp4", "still camera, a ball crosses"), ("clips/still.png", "a photo")]
    with open(HERE / "videos.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "expected"])
        writer.writerows(rows)
    total = sum(p.stat().st_size for p in (HERE / "clips").iterdir())
    print(f"wrote {len(rows)} clips ({total / 1e6:.2f} MB) and {HERE / 'videos.csv'}")


if __name__ == "__main__":
    main()
