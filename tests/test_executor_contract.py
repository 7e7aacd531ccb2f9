"""The executor contract (vidcap.session): an executor is one `run(job)` over a frozen job that returns one
report per worker; the session plans, checks, merges and sums the reports up. And the one row source."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from media import make_video

from vidcap.backends.base import CaptionOptions
from vidcap.backends.registry import resolve_model
from vidcap.config import RunOptions
from vidcap.rows import ListSource
from vidcap.session import Executor, Job, Session, WorkerReport
from vidcap.stages.caption import CaptionStage


class Chunks(Executor):
    """Records every row itself, three rows a worker: a whole executor in one method."""

    name, unit = "chunks", "workers"

    def __init__(self):
        self.jobs: list[Job] = []

    def run(self, job: Job) -> list[WorkerReport]:
        self.jobs.append(job)
        todo, reports = job.rows(), []
        for i, rows in enumerate(iter(lambda: todo.take(3), None)):
            recorder = job.recorder(f"c{i}")
            for row in rows:
                recorder.record(row, {"text": f"caption of {row['path']}"})
            recorder.flush()
            reports.append(WorkerReport(f"c{i}", recorder.counts, {"tokens": len(rows)}))
        return reports


def test_an_executor_is_one_method_over_a_frozen_job(tmp_path):
    for i in range(5):
        make_video(tmp_path / f"c{i}.mp4", n_frames=4, size=(32, 24))
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [f"c{i}.mp4" for i in range(5)]}).to_csv(manifest, index=False)
    out = tmp_path / "out.csv"
    stage = CaptionStage(resolve_model("fake", None), CaptionOptions())
    executor = Chunks()
    summary = Session(stage, manifest, out, RunOptions(progress=False)).run(executor)
    with pytest.raises(dataclasses.FrozenInstanceError):
        executor.jobs[0].stage = stage  # type: ignore[misc]
    assert summary["processed"] == 5 and summary["ok"] == 5 and summary["workers"] == 2
    assert summary["tokens"] == 5  # the workers' figures, summed
    assert summary["ledger"]["executor"] == "chunks"
    got = pd.read_csv(out)
    assert list(got["text"]) == [f"caption of c{i}.mp4" for i in range(5)]
    again = Session(stage, manifest, out, RunOptions(progress=False)).run(Chunks())
    assert again["processed"] == 0 and again["skipped"] == 5  # resumed: nothing handed out


class Blocks(ListSource[int]):
    def __init__(self):
        super().__init__([0], total=7)
        self.blocks = [[1, 2, 3], [], [4, 5, 6]]

    def more(self) -> list[int] | None:
        return self.blocks.pop(0) if self.blocks else None


def test_a_list_source_gives_its_items_in_order_then_none():
    src = ListSource(range(5))
    assert len(src) == 5
    assert [src.take(2), src.take(2), src.take(2), src.take(2)] == [[0, 1], [2, 3], [4], None]
    blocks = Blocks()  # a source that reads its next block when it runs short (the ledger's, the plan file's)
    assert len(blocks) == 7
    assert [blocks.take(3, 0.1), blocks.take(5), blocks.take(1)] == [[0, 1, 2], [3, 4, 5, 6], None]
