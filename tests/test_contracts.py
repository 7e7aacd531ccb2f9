"""Declared contracts: typed caption options refuse unknown or inapplicable keys in one sentence, and the
layers import one way (cli -> executors -> session -> stages -> backends -> frames/manifest/errors)."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd
import pytest

from vidcap.backends.base import CaptionOptions
from vidcap.cli import main
from vidcap.errors import UsageError

SRC = Path(__file__).parents[1] / "src" / "vidcap"


def test_unknown_option_key_is_named():
    with pytest.raises(UsageError, match="unknown caption option 'fast'"):
        CaptionOptions.from_dict({"fast": False})
    assert CaptionOptions.from_dict({"engine": False}).engine is False


def test_an_option_the_backend_does_not_use_is_refused(tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": ["a.mp4"]}).to_csv(manifest, index=False)
    rc = main(["caption", str(manifest), "--model", "fake", "--base-url", "http://localhost:1/v1", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "does not use the option 'base_url' (--base-url)" in err
    assert "Traceback" not in err and not (tmp_path / "m_caption.csv").exists()


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            names.add((node.module or "").split(".")[0])
    return names


@pytest.mark.parametrize("floor,above", [
    ("backends", {"runners", "runner", "session", "stages", "cli"}),
    ("stages", {"runners", "runner", "session", "cli"}),
    ("engine", {"runners", "runner", "session", "stages", "cli"}),
    ("frames", {"runners", "runner", "session", "stages", "backends", "cli"}),
])
def test_lower_floors_import_nothing_from_higher_ones(floor, above):
    for path in (SRC / floor).glob("*.py"):
        bad = _imports(path) & above
        assert not bad, f"{path.name} imports {bad}"
    for module in ("session.py", "feeder.py", "parts.py", "manifest.py"):
        assert not _imports(SRC / module) & {"runners", "runner", "cli"}, module
