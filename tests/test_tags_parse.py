"""parse_tags repairs the messy answers chat models really give, and refuses what it cannot read safely."""

import pytest

from vidcap.errors import VidcapError
from vidcap.tags.parse import clean_tag, parse_tags, tags_from_cell

CASES = [
    # (model output, expected tags)
    ("[dog, person]", ["dog", "person"]),
    ("'[dog, person]' ", ["dog", "person"]),
    ('["dog", "person", "frisbee"]', ["dog", "person", "frisbee"]),
    ("['Dog', 'person']", ["dog", "person"]),
    ('```json\n["car", "road"]\n```', ["car", "road"]),
    ('{"objects": ["car", "traffic light"]}', ["car", "traffic light"]),
    ("Here are the objects: [dog, person, ball]", ["dog", "person", "ball"]),
    ("[dog, person]\n\nNote: I only listed the visible objects in the text.", ["dog", "person"]),
    (
        "Sure! Here are the objects extracted from the text:\n\n[woman, red dress, street]\n\nLet me know if you need more.",
        ["woman", "red dress", "street"],
    ),
    ("1. dog\n2. person\n3. ball", ["dog", "person", "ball"]),
    ("Here are the actions:\n\n1. Running\n2. Laughing\n3. running", ["running", "laughing"]),
    ("- dog\n- person", ["dog", "person"]),
    ("* **Dog**: a brown dog running\n* **Person** - laughing at the dog", ["dog", "person"]),
    ("\u2022 cat\n\u2022 sofa", ["cat", "sofa"]),
    ("Objects: dog, person, ball", ["dog", "person", "ball"]),
    ("dog, person, and a ball.", ["dog", "person", "ball"]),
    ("[Dog, dog, DOG, Person]", ["dog", "person"]),
    ("[cats, dogs, people]", ["cats", "dogs", "people"]),
    ("[the dog, a person, an apple]", ["dog", "person", "apple"]),
    ("[person (laughing), dog]", ["person", "dog"]),
    ("[dog; cat; bird]", ["dog", "cat", "bird"]),
    ('[\n  "dog",\n  "person"\n]', ["dog", "person"]),
    ("[]", []),
    ("NONE", []),
    ("[NONE]", []),
    ("None.", []),
    ("NONE_FOUND", []),
    ("N/A", []),
    ("dog", ["dog"]),
    ("[run, laugh] [dog]", ["run", "laugh"]),
    ("[\u201cdog\u201d, \u2018person\u2019]", ["dog", "person"]),
    ("[dog\x19, ---, \u200bperson, !!]", ["dog", "person"]),  # control/format characters, no-letter items
    ("[Caf\u00e9, \u72d7]", ["caf\u00e9", "\u72d7"]),  # non-ASCII tags are kept
]


@pytest.mark.parametrize("text,expected", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_parse_repairs_messy_output(text, expected):
    assert parse_tags(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n ",
        "I'm sorry, but I cannot extract objects from this text because it does not describe a scene.",
        "The video shows a dog running around while a person laughs at it in the park.",
        "Sure!",
        "[This text does not mention any concrete objects that I could list here]",
    ],
)
def test_parse_refuses_unreadable_output(text):
    with pytest.raises(VidcapError) as info:
        parse_tags(text)
    assert info.value.code == "parse"


def test_truncated_output_drops_the_cut_item():
    assert parse_tags("[dog, person, ba", truncated=True) == ["dog", "person"]
    assert parse_tags("[dog, person, ba") == ["dog", "person", "ba"]
    assert parse_tags("[dog, person,", truncated=True) == ["dog", "person"]
    assert parse_tags("1. dog\n2. person\n3. ba", truncated=True) == ["dog", "person"]


def test_error_message_quotes_the_output():
    with pytest.raises(VidcapError) as info:
        parse_tags("I cannot help with that request at all, it is unclear.")
    assert "I cannot help" in info.value.message


def test_clean_tag():
    assert clean_tag('  "The Red Car." ') == "red car"
    assert clean_tag("2. **Tree**") == "tree"
    assert clean_tag("and  bird") == "bird"


def test_tags_from_cell_reads_every_stored_form():
    import numpy as np

    assert tags_from_cell(["dog", "cat"]) == ["dog", "cat"]
    assert tags_from_cell(np.array(["dog", "cat"], dtype=object)) == ["dog", "cat"]
    assert tags_from_cell('["dog", "cat"]') == ["dog", "cat"]
    assert tags_from_cell("dog, Cat") == ["dog", "cat"]  # the seed's CSV cells
    assert tags_from_cell("NONE_FOUND") == []
    assert tags_from_cell("[]") == []
    assert tags_from_cell(None) is None
    assert tags_from_cell(float("nan")) is None
