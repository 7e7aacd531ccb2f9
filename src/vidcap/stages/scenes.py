"""The scenes stage: each video's shots (or fixed windows), one output row per scene.

A video's scenes are one result (a JSON list in column `scenes`), recorded once per input row like every
stage's result, so parts, resume and kills work per video as they do everywhere; the ledger unnests the list
into one row per scene when it writes the output (`Stage.expands`)."""

from __future__ import annotations

import json
import os

from ..errors import DECODE, VidcapError
from ..scenes import DETECT_WIDTH, SCENE_FIELDS, SceneOptions, require_detector, scenes
from .base import Item, Stage

METHOD = "pyscenedetect-0.7-v1"  # bump when the scenes of a video change, so old parts are not mixed in


class ScenesLoader:
    """Runs in worker processes: the scenes of one row's video (or of its range)."""

    def __init__(self, opts: SceneOptions):
        self.opts = opts

    def __call__(self, row: dict) -> tuple[list[dict], float]:
        from ..frames.decode import check_path
        from ..frames.images import is_image_file
        from ..manifest import ABSPATH, read_range

        _one_thread()
        path = check_path(row.get(ABSPATH, row.get("path")))
        span = read_range(row)
        if is_image_file(path):
            raise VidcapError(DECODE, "a still image has no scenes")
        return scenes(path, self.opts, span)


_threads_set = False


def _one_thread() -> None:
    """OpenCV's own thread pool (the detectors' colour conversions) fights the other workers for the cores."""
    global _threads_set
    if not _threads_set:
        import cv2

        cv2.setNumThreads(1)
        _threads_set = True


class ScenesStage(Stage):
    """`ScenesStage(SceneOptions(...))`: per video, its scenes; the output has one row per scene with columns
    scene, start_time, end_time, start_frame, end_frame, duration (SCENE_FIELDS) and fps."""

    name = "scenes"
    suffix = "scenes"
    columns = ["scenes", "fps"]  # noqa: RUF012 (what a part holds per video; the output unnests `scenes`)
    dtypes = {"fps": "float64"}  # noqa: RUF012
    expands = "scenes"
    expand_fields = SCENE_FIELDS
    batch_size = 32
    default_workers = max(1, os.cpu_count() or 1)  # all the work is in the loader processes

    def __init__(self, opts: SceneOptions | None = None):
        self.opts = opts or SceneOptions()
        if not self.opts.window:
            require_detector()

    def fingerprint(self) -> dict:
        o = self.opts
        mode = {"window": o.window} if o.window else {"detector": o.detector, "threshold": o.cut_threshold}
        return {
            "stage": self.name,
            "method": METHOD,
            **mode,
            "min_scene_len": o.min_len,
            "max_scene_len": o.max_len,
            **({"width": o.width} if o.width != DETECT_WIDTH or not o.window else {}),
        }

    def loader(self) -> ScenesLoader:
        return ScenesLoader(self.opts)

    def process_batch(self, items: list[Item]) -> list[dict]:
        return [{"scenes": json.dumps(found), "fps": round(float(fps), 6)} for found, fps in (i.data for i in items)]

    def finish(self, results) -> dict:
        import pyarrow.compute as pc

        got = results.read(["scenes"], "status = 'ok' AND scenes IS NOT NULL").column("scenes")
        return {"scenes": int(pc.sum(pc.count_substring(got, '"scene":')).as_py() or 0)}


# Columns of a scenes table that are about the scenes run itself: a table of windows to caption drops them
# (the caption run records its own status, error, fps and file identity).
RUN_ONLY = ("fps", "file_size", "file_mtime", "status", "error")


def window_rows(scenes_table, target) -> int:
    """The manifest `vidcap caption --window` captions: the rows of a scenes table (one per window, range
    rows) less its run columns, written atomically to `target` beside it (so relative paths keep their
    meaning). A video whose scenes failed stays one whole-file row: its caption fails the same way."""
    from .. import tables

    df = tables.read(scenes_table)
    tables.write(df.drop(columns=[c for c in RUN_ONLY if c in df.columns]), target)
    return len(df)
