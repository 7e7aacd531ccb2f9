"""Near-duplicate captions: known clusters in synthetic sets are found, unrelated captions are left alone."""

from __future__ import annotations

import random

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from vidcap.neardup import MIN_SIZE, NEAR_DUP, add_near_dup_columns, cluster_labels

VOCAB = [f"w{i}" for i in range(2000)]  # a large vocabulary: unrelated captions share few word pairs


def _variant(template: list[str], rng: random.Random) -> str:
    """The template with one word swapped: a near copy."""
    words = list(template)
    words[rng.randrange(len(words))] = rng.choice(["red", "blue", "small", "large", "quick"])
    return " ".join(words)


@settings(max_examples=25, deadline=None, derandomize=True)  # MinHash is a sketch: no flaky seeds
@given(
    sizes=st.lists(st.integers(2, 12), min_size=1, max_size=5),
    singles=st.integers(0, 30),
    length=st.integers(14, 30),
    seed=st.integers(0, 10_000),
)
def test_known_clusters_are_found(sizes, singles, length, seed):
    rng = random.Random(seed)
    texts, truth = [], []
    for c, n in enumerate(sizes):
        template = rng.sample(VOCAB, length)
        texts.append(" ".join(template))  # the stock caption, then its near copies
        truth.append(c)
        for _ in range(n):
            texts.append(_variant(template, rng))
            truth.append(c)
    for k in range(singles):
        texts.append(" ".join(rng.sample(VOCAB, length)))
        truth.append(len(sizes) + k)
    order = list(range(len(texts)))
    rng.shuffle(order)
    labels = cluster_labels([texts[i] for i in order])
    got = {}
    for i, lab in zip(order, labels, strict=False):
        got.setdefault(truth[i], set()).add(lab)
    assert all(len(labs) == 1 for labs in got.values())  # each true cluster is one found cluster
    owners = {}
    for true, labs in got.items():
        (lab,) = labs
        assert owners.setdefault(lab, true) == true  # no two true clusters merged


def test_columns_flags_and_summary():
    rng = random.Random(1)
    template = rng.sample(VOCAB, 20)
    texts = [_variant(template, rng) for _ in range(6)] + [" ".join(rng.sample(VOCAB, 20)) for _ in range(4)]
    texts += [""]  # an empty caption is no one's near copy
    df = pd.DataFrame({"text": texts, "flags": ["boilerplate"] + [""] * 10, "status": ["ok"] * 10 + ["ok"]})
    df.loc[9, "status"] = "failed"
    out, summary = add_near_dup_columns(df)
    assert out["near_dup_size"].iloc[:6].tolist() == [6] * 6 and (out["near_dup_cluster"].iloc[:6] == 0).all()
    assert out["near_dup_size"].iloc[6:9].tolist() == [1, 1, 1] and out["near_dup_cluster"].iloc[6:].isna().all()
    assert pd.isna(out["near_dup_size"].iloc[9]) and pd.isna(out["near_dup_size"].iloc[10])  # failed, empty
    assert out["flags"].iloc[0] == f"boilerplate,{NEAR_DUP}" and out["flags"].iloc[1] == NEAR_DUP
    assert summary == {"clusters": 1, "rows_in_clusters": 6, "largest": [6], "flagged": 6}
    again, _ = add_near_dup_columns(out)  # idempotent on a resumed run's results
    assert again["flags"].tolist() == out["flags"].tolist()


def test_small_clusters_get_a_size_but_no_flag():
    texts = ["a man rides a red bicycle down a steep hill in the rain"] * (MIN_SIZE - 1)
    out, _ = add_near_dup_columns(pd.DataFrame({"text": texts, "flags": "", "status": "ok"}))
    assert (out["near_dup_size"] == MIN_SIZE - 1).all() and (out["flags"] == "").all()


def test_caption_run_and_report_show_clusters(tmp_path):
    """Three copies of one clip (one caption) and two other clips through `vidcap caption` and `vidcap report`."""
    import shutil

    from clirun import vidcap
    from media import make_video

    make_video(tmp_path / "a.mp4", n_frames=12)
    for name in ("b.mp4", "c.mp4"):
        shutil.copy(tmp_path / "a.mp4", tmp_path / name)
    make_video(tmp_path / "d.mp4", n_frames=12, size=(200, 100))
    make_video(tmp_path / "e.mp4", n_frames=24, size=(64, 128))
    pd.DataFrame({"path": ["a.mp4", "b.mp4", "c.mp4", "d.mp4", "e.mp4"]}).to_csv(tmp_path / "m.csv", index=False)
    proc = vidcap("caption", tmp_path / "m.csv", "--model", "fake", "--workers", "0", "-q", "-o", tmp_path / "o.csv")
    out = pd.read_csv(tmp_path / "o.csv").set_index("path")
    assert out.loc[["a.mp4", "b.mp4", "c.mp4"], "near_dup_size"].tolist() == [3, 3, 3]
    assert (out.loc[["a.mp4", "b.mp4", "c.mp4"], "near_dup_cluster"] == 0).all()
    assert out.loc["a.mp4", "flags"] == "duplicate" and "near dup: clusters 1" in proc.stderr  # exact copies
    vidcap("report", tmp_path / "o.csv", "-o", tmp_path / "r.html")
    assert "Near-duplicate captions: 1 clusters, 3 rows" in (tmp_path / "r.html").read_text()
