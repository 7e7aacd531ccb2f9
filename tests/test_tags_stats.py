"""tag_stats counts tags from every stored form (Parquet lists, CSV JSON arrays, the seed's CSV) and draws a PNG."""

import json

import numpy as np
import pandas as pd
import pytest

from vidcap.errors import UsageError
from vidcap.tags.stats import tag_stats

ROWS = [
    # path, objects cell as `vidcap tag` writes it to CSV, status, error
    ("a.mp4", '["dog", "person"]', "ok", ""),
    ("b.mp4", '["dog", "ball"]', "ok", ""),
    ("c.mp4", '["car"]', "ok", ""),
    ("d.mp4", "[]", "ok", ""),
    ("e.mp4", None, "failed", "parse: no tag list in the model output: 'Sure!'"),
    ("f.mp4", None, "failed", "empty_text: the 'text' column is empty"),
    ("g.mp4", '["person", "dog", "car"]', "ok", ""),
]


def _df():
    return pd.DataFrame(ROWS, columns=["path", "objects", "status", "error"])


def _check(counts, table):
    assert list(counts["tag"]) == ["dog", "car", "person", "ball"]  # ties broken by name
    assert list(counts["count"]) == [3, 2, 2, 1]
    assert counts["share"].iloc[0] == pytest.approx(3 / 5)
    assert "7 rows, 5 tagged (1 with no tags), 2 failed" in table
    assert "4 distinct tags" in table
    first = [line for line in table.splitlines() if line.strip().startswith("1 ")][0]
    assert first.split() == ["1", "dog", "3", "60.0%"]


def test_stats_from_csv_with_png(tmp_path):
    out = tmp_path / "meta_objects.csv"
    _df().to_csv(out, index=False)
    png = tmp_path / "charts" / "objects.png"
    counts, table = tag_stats(out, "objects", png=png)
    _check(counts, table)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        assert im.size[0] == 800 and im.size[1] >= 250
        assert (
            len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 2
        )  # bars and text were drawn, not a blank canvas


def test_stats_from_parquet_lists(tmp_path):
    df = _df()
    df["objects"] = [json.loads(c) if isinstance(c, str) else None for c in df["objects"]]
    out = tmp_path / "meta_objects.parquet"
    df.to_parquet(out, index=False)
    counts, table = tag_stats(out, "objects")
    _check(counts, table)


def test_stats_reads_the_seeds_csv(tmp_path):
    """The seed wrote the text between the brackets (`dog, person`) and NONE_FOUND for failures."""
    out = tmp_path / "meta_objects.csv"
    pd.DataFrame({"path": ["a", "b", "c"], "objects": ["dog, person", "Dog", "NONE_FOUND"]}).to_csv(out, index=False)
    counts, table = tag_stats(out, "objects", top=1)
    assert dict(zip(counts["tag"], counts["count"], strict=False)) == {"dog": 2, "person": 1}
    assert "1 more tags not shown" in table


def test_stats_errors(tmp_path):
    out = tmp_path / "meta_objects.csv"
    _df().to_csv(out, index=False)
    with pytest.raises(UsageError, match="no 'actions' column"):
        tag_stats(out, "actions")
    with pytest.raises(UsageError, match="--top"):
        tag_stats(out, "objects", top=-1)
