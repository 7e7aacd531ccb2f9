"""The decode feeder hands rows to worker processes in chunks: every row comes back exactly once, a failed
load is that row's error, a decoder process that dies names only the row it died on, and memory stays
bounded in rows."""

from __future__ import annotations

import time

from feeder_loaders import Scripted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vidcap.feeder import LIGHT_ROWS, Feeder
from vidcap.manifest import RID

CRASHED = "decode: the decoder process crashed on this file"


def rows_of(n: int) -> list[dict]:
    return [{RID: f"r{i:05d}", "path": f"clip{i:05d}.mp4"} for i in range(n)]


def drain(feeder: Feeder, take: int = 7) -> list[tuple]:
    out: list[tuple] = []
    feeder.start()
    try:
        while (got := feeder.take(take, 5.0)) is not None:
            out.extend(got)
    finally:
        feeder.close()
    assert feeder.error is None
    return out


def check_once(rows: list[dict], out: list[tuple]) -> dict:
    """Every row handed over exactly once; returns path -> (data, error)."""
    paths = [row["path"] for row, _, _ in out]
    assert sorted(paths) == sorted(r["path"] for r in rows)
    return {row["path"]: (data, err) for row, data, err in out}


def test_inline_chunks_keep_manifest_order_and_errors():
    rows = rows_of(3000)
    bad = frozenset(r["path"] for r in rows[::97])
    out = drain(Feeder(Scripted(bad=bad), rows, workers=0, depth=8))
    assert [row["path"] for row, _, _ in out] == [r["path"] for r in rows]  # one thread: manifest order
    for row, data, err in out:
        if row["path"] in bad:
            assert data is None and err.startswith("decode: ValueError: cannot decode")
        else:
            assert err is None and data == row["path"].upper()


def test_pool_chunks_every_row_once_and_grow():
    """Rows that fail fast (a manifest of missing files) travel in large chunks, not one task each; rows
    with data come back a few at a time (a task gives at most its share of `depth`)."""
    rows = rows_of(5000)
    good = frozenset(r["path"] for r in rows[5::500])
    bad = frozenset(r["path"] for r in rows) - good
    feeder = Feeder(Scripted(bad=bad), rows, workers=2, depth=8)
    got = check_once(rows, drain(feeder))
    assert all((err is not None) == (path in bad) for path, (_, err) in got.items())
    assert feeder.tasks < 100


def test_first_rows_are_not_held_back_for_a_chunk():
    """The first task holds one row, so the first clip reaches the model as soon as it is decoded."""
    feeder = Feeder(
        Scripted(slow=frozenset(f"clip{i:05d}.mp4" for i in range(50)), sleep=0.02), rows_of(50), workers=1, depth=8
    ).start()
    try:
        first = feeder.take(100, 30.0)
        assert first is not None and len(first) == 1 and first[0][0]["path"] == "clip00000.mp4"
    finally:
        feeder.close()


def test_a_task_past_its_budget_sends_the_rest_again():
    """Rows a worker did not reach within the task's time budget go out again, none lost or doubled."""
    rows = rows_of(400)
    slow = frozenset(r["path"] for r in rows[::3])
    for workers in (0, 2):
        feeder = Feeder(Scripted(slow=slow, sleep=0.002), rows, workers=workers, depth=8, task_seconds=0.005)
        got = check_once(rows, drain(feeder))
        assert all(err is None and data == path.upper() for path, (data, err) in got.items())


def test_memory_is_bounded_in_rows():
    """A consumer that stops taking: the feeder holds at most 2 x `depth` rows of data (in flight and loaded)
    and LIGHT_ROWS failed rows (plus one chunk), however many rows are left."""
    for workers in (0, 1):
        rows = rows_of(4000)
        feeder = Feeder(Scripted(), rows, workers=workers, depth=10).start()
        try:
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                assert feeder.held_data + feeder.reserved <= 2 * feeder.depth and feeder.reserved <= feeder.depth
                time.sleep(0.05)
            assert feeder.held_data > 0
        finally:
            feeder.close()
        bad = frozenset(r["path"] for r in rows_of(20000))
        feeder = Feeder(Scripted(bad=bad), rows_of(20000), workers=workers, depth=10).start()
        try:
            time.sleep(1.5)
            assert feeder.held_light + feeder.flying <= LIGHT_ROWS + feeder.max_chunk
        finally:
            feeder.close()


def test_a_crash_inside_a_chunk_names_only_its_row():
    rows = rows_of(600)
    poison = frozenset({"clip00123.mp4"})
    feeder = Feeder(Scripted(crash=poison), rows, workers=2, depth=8)
    got = check_once(rows, drain(feeder))
    assert got["clip00123.mp4"] == (None, CRASHED)
    assert all(err is None and data == path.upper() for path, (data, err) in got.items() if path not in poison)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 160),
    crash_at=st.lists(st.integers(0, 159), max_size=2, unique=True),
    bad_at=st.lists(st.integers(0, 159), max_size=3, unique=True),
    workers=st.integers(1, 3),
    depth=st.integers(1, 12),
    max_chunk=st.sampled_from([1, 2, 5, 16, 1024]),
)
def test_crashes_and_errors_at_any_position(n, crash_at, bad_at, workers, depth, max_chunk):
    rows = rows_of(n)
    crash = frozenset(rows[i]["path"] for i in crash_at if i < n)
    bad = frozenset(rows[i]["path"] for i in bad_at if i < n) - crash
    feeder = Feeder(Scripted(crash=crash, bad=bad), rows, workers=workers, depth=depth, max_chunk=max_chunk)
    got = check_once(rows, drain(feeder, take=3))
    for path, (data, err) in got.items():
        if path in crash:
            assert (data, err) == (None, CRASHED)
        elif path in bad:
            assert data is None and "ValueError" in err
        else:
            assert (data, err) == (path.upper(), None)


def test_a_failed_load_is_recorded_like_any_failed_row(tmp_path):
    """The recorder's shortcut for rows that failed to load gives the same record, key order included; a
    missing file has no size, a file that is there keeps its size and mtime."""
    from vidcap.backends.base import CaptionOptions
    from vidcap.backends.registry import resolve_model
    from vidcap.config import RunOptions
    from vidcap.manifest import ABSPATH
    from vidcap.session import Recorder
    from vidcap.stages.caption import CaptionStage

    class Parts:
        def write_part(self, rows):
            pass

    there = tmp_path / "broken.mp4"
    there.write_bytes(b"not a video")
    stage = CaptionStage(resolve_model("fake", None), CaptionOptions())
    for path, err in [(str(tmp_path / "gone.mp4"), "missing: no such file"), (str(there), "decode: bad data")]:
        row = {RID: "r1", ABSPATH: path}
        fast, slow = Recorder(stage, Parts(), RunOptions()), Recorder(stage, Parts(), RunOptions())
        fast.record(row, {"error": err})
        slow.record(row, {"error": err, "text": None})  # not the shortcut
        assert list(fast.buffer[0].items()) == list(slow.buffer[0].items())
        assert (fast.buffer[0]["file_size"] is None) == err.startswith("missing")
        assert fast.counts == slow.counts
