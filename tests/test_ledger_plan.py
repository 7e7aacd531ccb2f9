"""The ledger's plan over saved results with several rows per id (a row redone by a later run, or left twice
by a kill during compaction): one result per id (an ok row wins, else the latest), redo by that result only,
and each id of the manifest planned once (its first row), duplicates and range rows included."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vidcap.backends.base import CaptionOptions
from vidcap.backends.registry import resolve_model
from vidcap.ledger import Ledger
from vidcap.manifest import ABSPATH, RID, row_key_path
from vidcap.parts import PartStore
from vidcap.session import run_fingerprint
from vidcap.stages.caption import CaptionStage

PATHS = [f"/nonexistent/v{i}.mp4" for i in range(8)]
# id -> saved rows in the order they were saved (status, error); the first part holds the older rows
SAVED = {
    0: [("ok", "")],  # done
    1: [("failed", "timeout: slow")],  # retryable: redone
    2: [("failed", "timeout: slow"), ("ok", "")],  # redone by a later run, ok: done
    3: [("ok", ""), ("failed", "timeout: slow")],  # an ok row wins over a later failure: done
    4: [("failed", "missing: gone"), ("failed", "timeout: slow")],  # the latest is retryable: redone
    5: [("failed", "timeout: slow"), ("failed", "missing: gone")],  # the latest is final: done
    6: [("failed", "missing: gone"), ("failed", "missing: gone")],  # twice (a kill during compaction): done
}  # v7: never saved


def write_parts(store: PartStore) -> None:
    """Two part files: every id's first saved row in the older one, its second in the newer one."""
    for k, name in enumerate(["part-w0-1-000001.parquet", "part-w0-2-000002.parquet"]):
        rows = [(PATHS[i], *saved[k]) for i, saved in SAVED.items() if len(saved) > k]
        table = pa.table(
            {
                RID: [row_key_path(p) for p, _, _ in rows],
                "status": [s for _, s, _ in rows],
                "error": [e for _, _, e in rows],
            }
        )
        pq.write_table(table, store.dir / name)


def plan(tmp_path: Path, manifest: list[str], **kw) -> tuple[dict, list[str]]:
    stage = CaptionStage(resolve_model("fake"), CaptionOptions(num_frames=2))
    (tmp_path / "m.csv").write_text("path\n" + "\n".join(manifest) + "\n")
    store = PartStore(tmp_path / "o.parquet", run_fingerprint(stage))
    store.open({})
    led = Ledger(stage, tmp_path / "m.csv", store)
    try:
        write_parts(store)
        led.ingest()
        led.refresh(prior=True)
        got = led.plan(**kw)
        rows = led.source()
        todo = []
        while (block := rows.take(100)) is not None:
            todo += [r[ABSPATH] for r in block]
        return got, todo
    finally:
        led.close()
        store.close()


def test_one_result_per_id_decides_what_is_redone(tmp_path):
    got, todo = plan(tmp_path, PATHS, check_files=True)
    assert todo == [PATHS[1], PATHS[4], PATHS[7]]
    assert got == {"rows": 8, "todo": 3}


def test_retry_failed_redoes_every_id_without_an_ok_row(tmp_path):
    _, todo = plan(tmp_path, PATHS, retry_failed=True)
    assert todo == [PATHS[1], PATHS[4], PATHS[5], PATHS[6], PATHS[7]]


@pytest.mark.parametrize("order", ["given", "reversed"])
def test_duplicate_manifest_rows_are_planned_once_at_their_first_row(tmp_path, order):
    manifest = [PATHS[7], PATHS[1], PATHS[0], PATHS[7], PATHS[1]]
    manifest = manifest if order == "given" else manifest[::-1]
    _, todo = plan(tmp_path, manifest)
    assert todo == list(dict.fromkeys(p for p in manifest if p in (PATHS[1], PATHS[7])))
