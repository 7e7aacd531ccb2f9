"""Benchmark inputs: a few distinct h264 clips at the asked resolution, hard-linked to many names.

Distinct names give distinct row ids, so every row goes through the whole pipeline; hard links keep
the disk and the page cache use of a large bench small (the encode is the slow part, not the decode).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def _encode(path: str, width: int, height: int, n_frames: int, fps: int, seed: int) -> str:
    import av

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    texture = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23", "g": str(2 * fps)}
        for i in range(n_frames):
            dx = (3 * i) % 16
            frame = np.ascontiguousarray(texture[dx % 8 : dx % 8 + height, dx : dx + width])
            frame[: height // 10, : width // 10] = (i * 37) % 255  # some change every frame
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def make_bench_clips(
    root,
    n_videos: int,
    width: int,
    height: int,
    seconds: float,
    fps: int = 24,
    distinct: int = 16,
    workers: int | None = None,
) -> Path:
    """Write `n_videos` clip names (hard links to `distinct` encoded clips) and a manifest; returns it."""
    root = Path(root)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    distinct = max(1, min(distinct, n_videos))
    n_frames = max(1, int(round(seconds * fps)))
    sources = [root / "clips" / f"src_{width}x{height}_{n_frames}_{i:03d}.mp4" for i in range(distinct)]
    todo = [p for p in sources if not p.exists()]
    if todo:
        with ProcessPoolExecutor(max_workers=workers or min(len(todo), os.cpu_count() or 2)) as pool:
            list(
                pool.map(
                    _encode,
                    map(str, todo),
                    [width] * len(todo),
                    [height] * len(todo),
                    [n_frames] * len(todo),
                    [fps] * len(todo),
                    range(len(todo)),
                )
            )
    rows = []
    for i in range(n_videos):
        link = root / "clips" / f"v{i:06d}_{width}x{height}.mp4"
        if not link.exists():
            try:
                os.link(sources[i % distinct], link)
            except OSError:
                link.symlink_to(sources[i % distinct].name)
        rows.append(str(link))
    manifest = root / f"bench_{n_videos}_{width}x{height}.csv"
    import pandas as pd

    # absolute: runs resolve relative paths against the manifest's folder, not the working directory
    pd.DataFrame({"path": [os.path.abspath(r) for r in rows]}).to_csv(manifest, index=False)
    return manifest
