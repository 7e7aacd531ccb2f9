"""Running the `vidcap` CLI from tests: one helper for every test module."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VIDCAP = [sys.executable, "-m", "vidcap"]
SRC = str(Path(__file__).parents[1] / "src")
_TEST_KNOBS = ("VIDCAP_TEST_FAULT", "VIDCAP_FAKE_DELAY")


def cli_env(**extra) -> dict:
    """This environment with vidcap's source importable and no test knob left over, plus `extra`."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for knob in _TEST_KNOBS:
        env.pop(knob, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def vidcap(*args, check=True, cwd=None, env=None, timeout=300, **extra_env):
    """Run `vidcap ARGS`; with check, a non-zero exit fails the test and shows stderr."""
    proc = subprocess.run(
        [*VIDCAP, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env if env is not None else cli_env(**extra_env),
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"vidcap {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def read_resolved(table):
    """A CSV/Parquet output with its `path` column resolved as vidcap resolves it (against the table's own
    folder): outputs beside their manifest keep relative paths, outputs elsewhere are written absolute."""
    from vidcap.manifest import read_table, resolved_paths

    df = read_table(table)
    df["path"] = resolved_paths(df, table)
    return df
