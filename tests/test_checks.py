"""Caption checks on real-looking good and bad VLM captions."""

from __future__ import annotations

import pandas as pd
import pytest

from vidcap.checks import (
    DUPLICATE_MIN_ROWS,
    FLAGS,
    LLAVA_PREFIX,
    CaptionChecker,
    add_duplicate_flags,
    duplicate_flags,
    flag_caption,
    flag_counts,
    parse_flags,
    strip_prefix,
)
from vidcap.manifest import RID

# (caption, finish_reason, expected flags)
CASES = [
    # good captions
    (
        "A golden retriever runs along a wet beach at sunset, kicking up spray as small waves roll in. "
        "The camera tracks it from the side at a low angle.",
        "stop",
        [],
    ),
    (
        "Aerial view of a winding mountain road through a pine forest in autumn; a red car drives uphill "
        "while low clouds drift over the ridge.",
        "stop",
        [],
    ),
    ("Close-up of hands kneading bread dough on a floured wooden table, soft morning light from a window.", "stop", []),
    ("a dog on a beach", "stop", []),  # phrase-style caption without a period: not truncated
    (
        "Time-lapse of city traffic at night: streaks of headlights on a multi-lane highway, skyscrapers "
        "lit in the background, and in the background a crane turns slowly.",
        "stop",
        [],
    ),
    (
        "A chef in a white uniform slices green onions with a large knife. He gathers them into a bowl! "
        "Steam rises from a pot behind him.",
        None,
        [],
    ),
    ("Two children ride bicycles down a quiet suburban street lined with maple trees (late afternoon).", "stop", []),
    ('The skateboarder said "watch this" before landing a kickflip on the empty parking lot.', "stop", []),
    # truncated
    (
        "A woman in a blue dress walks through a crowded market, passing stalls of fruit and spices while "
        "vendors call out to customers and a",
        "length",
        [  # the token limit hit mid-word
            "truncated"
        ],
    ),
    (
        "A man in a grey suit stands at a podium in a conference hall. Behind him a large screen shows a "
        "bar chart, and the audience",
        "stop",
        ["truncated"],
    ),
    (
        "A drone flies low over a turquoise lagoon with several wooden boats moored near the shore and palm trees "
        "swaying gently in the breeze along the sandy beach",
        "stop",
        ["truncated"],
    ),
    ("A cat sleeps on a windowsill next to a potted plant,", "stop", ["truncated"]),
    ("A finished caption that still hit the token limit exactly.", "length", ["truncated"]),
    # repetition loops
    (
        "A man is walking down the street. A man is walking down the street. A man is walking down the street.",
        "stop",
        ["repetition"],
    ),
    (
        "The scene shows a kitchen with a table and chairs and chairs and chairs and chairs and chairs and "
        "chairs and chairs and chairs and chairs and chairs and",
        "length",
        ["truncated", "repetition"],
    ),
    (
        "Snow falls. The roofs of the village are white and smoke rises from the chimneys. Snow falls.",
        "stop",
        [],
    ),  # a sentence under 4 words said twice is style, not a loop
    (
        "Waves crash on the rocks. The lighthouse stands on the cliff above the sea. Seagulls circle overhead. "
        "The lighthouse stands on the cliff above the sea.",
        "stop",
        ["repetition"],
    ),
    ("very very very very bright light fills the empty room.", "stop", ["repetition"]),
    # boilerplate prefixes
    (
        "The video shows a group of people dancing in a brightly lit club with colourful lasers.",
        "stop",
        ["boilerplate"],
    ),
    (
        "In the video, a red sports car drifts around a corner on a race track, smoke pouring from its tyres.",
        "stop",
        ["boilerplate"],
    ),
    ("the image depicts a bowl of ramen with a soft-boiled egg and sliced pork.", "stop", ["boilerplate"]),
    (
        "The video captures a serene lake surrounded by mountains. The video captures a serene lake "
        "surrounded by mountains. The video captures a serene lake surrounded by mountains.",
        "stop",
        ["repetition", "boilerplate"],
    ),
    # empty
    ("", "stop", ["empty"]),
    ("   \n ", "stop", ["empty"]),
    (None, "stop", ["empty"]),
    ("...", "length", ["empty"]),
]


@pytest.mark.parametrize("text,finish,expected", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_flag_caption_table(text, finish, expected):
    assert flag_caption(text, finish) == expected


def test_table_covers_every_row_flag_good_and_bad():
    assert len(CASES) >= 15
    seen = {f for _, _, exp in CASES for f in exp}
    assert seen == set(FLAGS) - {"duplicate", "replaced_chars"}  # those two are set by the run, not per text
    assert sum(not exp for _, _, exp in CASES) >= 6


@pytest.mark.parametrize(
    "text,expected",
    [
        ("The video shows a man riding a horse.", "A man riding a horse."),
        ("the video shows a man riding a horse.", "A man riding a horse."),
        ("THE VIDEO SHOWS a man.", "A man."),  # case-insensitive
        ("In the video, two cats play with yarn.", "Two cats play with yarn."),
        ("The image is a photo of a bridge.", "A photo of a bridge."),
        ("The video features the video shows twice.", "The video shows twice."),  # one prefix only
        ("A man riding a horse.", "A man riding a horse."),
        ("The video shows.", "The video shows."),  # nothing left: unchanged (Open-Sora raised IndexError)
        ("  The video depicts  snow", "Snow"),
    ],
)
def test_strip_prefix(text, expected):
    assert strip_prefix(text) == expected


def test_prefix_list_is_the_seeds():
    assert LLAVA_PREFIX[0] == "The video shows" and LLAVA_PREFIX[-1] == "In the image,"
    assert len(LLAVA_PREFIX) == 17 and "The video is " in LLAVA_PREFIX


def test_checker_strips_then_flags_and_skips_failed_rows():
    plain, strip = CaptionChecker(), CaptionChecker(strip=True)
    text = "The video shows a kitten chasing a ball of yarn across a wooden floor."
    assert plain.check(text, "stop") == (text, "boilerplate")
    assert strip.check(text, "stop") == ("A kitten chasing a ball of yarn across a wooden floor.", "")
    assert strip.check("The video shows a kitten chasing", "length") == ("A kitten chasing", "truncated")
    assert plain.check("", "stop", error="decode: moov atom not found") == ("", "")
    assert plain.check("", "stop") == ("", "empty")


def test_duplicate_flags_threshold():
    stock = "A black screen with white text."
    texts = [stock, "a black  screen with WHITE text.", stock, "A dog.", "A dog.", "", ""]
    assert duplicate_flags(texts) == [True, True, True, False, False, False, False]
    assert duplicate_flags(texts, min_count=2) == [True, True, True, True, True, False, False]
    assert DUPLICATE_MIN_ROWS == 3


def test_add_duplicate_flags_on_results():
    stock = "The video shows a person."
    df = pd.DataFrame(
        {
            RID: ["a", "b", "b", "c", "d", "e", "f"],
            "text": [stock, stock, stock, "A cat.", stock, stock, "A cat."],
            "status": ["ok", "ok", "ok", "ok", "ok", "failed", "ok"],
            "flags": ["boilerplate", "boilerplate", "boilerplate", "", "boilerplate", "", "duplicate"],
        }
    )
    out = add_duplicate_flags(df)
    # a, b (listed twice) and d are three clips; the failed row e is neither counted nor flagged
    assert list(out["flags"]) == ["boilerplate,duplicate"] * 3 + ["", "boilerplate,duplicate", "", ""]
    assert list(df["flags"])[-1] == "duplicate"  # the input is not modified
    assert add_duplicate_flags(out).equals(out)  # idempotent (resume)
    counts = flag_counts(out)
    assert counts["duplicate"] == 4 and counts["boilerplate"] == 4 and counts["empty"] == 0
    assert counts["flagged"] == 4


def test_flag_counts_reads_csv_cells():
    df = pd.DataFrame({"flags": ["truncated,repetition", float("nan"), "", "empty", "truncated+boilerplate"]})
    counts = flag_counts(df)
    assert counts == {
        "empty": 1,
        "truncated": 2,
        "repetition": 1,
        "boilerplate": 1,
        "duplicate": 0,
        "replaced_chars": 0,
        "flagged": 3,
    }
    assert parse_flags(["a", "b"]) == ["a", "b"] and parse_flags(None) == []


def test_caption_run_flags_duplicates_end_to_end(tmp_path):
    """Three copies of one clip get the same (fake) caption: `duplicate` on each, counted in the summary."""
    import json
    import shutil

    import pyarrow.parquet as pq
    from media import make_video

    from vidcap.cli import main
    from vidcap.manifest import read_table

    make_video(tmp_path / "a.mp4", n_frames=24)
    for name in ("b.mp4", "c.mp4"):
        shutil.copyfile(tmp_path / "a.mp4", tmp_path / name)
    make_video(tmp_path / "other.mp4", n_frames=30)
    # a.mp4 listed twice is one clip (one row id); with b and c that makes three clips
    pd.DataFrame({"path": ["a.mp4", "a.mp4", "b.mp4", "other.mp4", "c.mp4", "gone.mp4"]}).to_csv(
        tmp_path / "m.csv", index=False
    )
    out = tmp_path / "out.parquet"
    assert main(["caption", str(tmp_path / "m.csv"), "-o", str(out), "--model", "fake", "-q", "--workers", "0"]) == 0
    df = read_table(out)
    assert list(df["flags"]) == ["duplicate", "duplicate", "duplicate", "", "duplicate", ""]
    assert df["status"].tolist()[-1] == "failed"
    meta = json.loads(pq.read_schema(out).metadata[b"vidcap"])
    assert meta["summary"]["flags"]["duplicate"] == 3 == meta["summary"]["flags"]["flagged"]  # per clip
    out2 = tmp_path / "stripped.parquet"
    assert (
        main(
            [
                "caption",
                str(tmp_path / "m.csv"),
                "-o",
                str(out2),
                "--model",
                "fake",
                "-q",
                "--workers",
                "0",
                "--strip-prefix",
            ]
        )
        == 0
    )
    assert json.loads(pq.read_schema(out2).metadata[b"vidcap"])["fingerprint"]["strip_prefix"] is True
