"""Declared contracts: typed caption options refuse unknown or inapplicable keys in one sentence (the layers
are checked over the whole import graph in test_layers.py)."""

from __future__ import annotations

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
