"""How long one range row's frames take from a long file: seeking to the range (vidcap's path) against reading
the file from its start (strategy="sequential", what a reader without range seeking does), and a clip cut.

    python benchmarks/ranges_seek.py [MINUTES] [OUT_DIR]

Writes a MINUTES-long 320x180 24 fps clip in each of MP4, MKV and MPEG-TS (libx264, a keyframe every 2 s),
then times 8 frames of a 10 s range near the start, the middle and the end (median of 3, CPU seconds of this
process) and one `vidcap.cut.cut_range` of each range. Prints a markdown table.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from media import make_video  # noqa: E402

from vidcap.cut import cut_range  # noqa: E402
from vidcap.frames import sample_frames  # noqa: E402

FPS = 24


def cpu(fn) -> float:
    runs = []
    for _ in range(3):
        t = time.process_time()
        fn()
        runs.append(time.process_time() - t)
    return statistics.median(runs)


def main() -> None:
    minutes = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    root = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp())
    root.mkdir(parents=True, exist_ok=True)
    n = int(minutes * 60 * FPS)
    print("| file | range | seek s | sequential s | cut s (copied?) |\n|---|---|---|---|---|")
    for ext in (".mp4", ".mkv", ".ts"):
        path = root / f"long{ext}"
        if not path.exists():
            make_video(path, n_frames=n, size=(320, 180), fps=FPS, gop=2 * FPS, preset="ultrafast")
        total = n / FPS
        for start in (5.0, total / 2, total - 15.0):
            span = (round(start, 3), round(start + 10.0, 3))
            seek = cpu(lambda span=span, path=path: sample_frames(path, 8, "segments", span=span))
            seq = cpu(lambda span=span, path=path: sample_frames(path, 8, "segments", span=span, strategy="sequential"))
            t = time.perf_counter()
            clip = cut_range(str(path), span, root / f"cut{ext}_{span[0]}.mp4")
            cut = time.perf_counter() - t
            print(
                f"| {ext} {minutes:g} min | {span[0]:g}-{span[1]:g} s | {seek:.3f} | {seq:.3f} | {cut:.2f} ({clip.copied}) |"
            )


if __name__ == "__main__":
    main()
