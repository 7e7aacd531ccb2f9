"""The seed's prompt table is byte-exact and `-text` prompts take the row's text."""

import hashlib

import pytest

from vidcap.errors import UsageError, VidcapError
from vidcap.prompts.caption import PROMPTS, custom_prompt, get_prompt, render

# sha256 prefixes of the strings as extracted from the seed source (IMPLEMENTATION-NOTES 1.8, 2.5, App. A)
SEED_HASHES = {
    "image": "ade33c75d9bbd64e",
    "image-text": "d8eb8630179f9682",
    "image-3ex": "4bf943b18a432f66",
    "video": "cc0351c2e94d519a",
    "video-text": "3482207007e6c032",
    "video-f1-detail-3ex": "1f9b54fd669bbb92",
    "video-f1-detail-2ex-text": "432ccc50d3547336",
    "video-f3-detail-3ex": "6a9c96c6bbc36675",
    "video-f3-detail-2ex-text": "19028016e4c2ec04",
    "video-template": "a948a9b6c32c9168",
    "video-captrans-template": "b29f555c7d6ca93f",
    "pllava": "1bd841c650381428",
    "pllava-short": "86ba98d6ba8999d5",
    "pllava-person": "7c211be34a3c1265",
    "pllava-person-short": "f12942c5353151f1",
}


def test_table_is_byte_exact():
    assert set(PROMPTS) == set(SEED_HASHES)
    for name, (_, text) in PROMPTS.items():
        assert hashlib.sha256(text.encode()).hexdigest()[:16] == SEED_HASHES[name], name


def test_types_and_text_slots():
    assert {n for n, (t, _) in PROMPTS.items() if t == "image"} == {"image", "image-text", "image-3ex"}
    needs = {n for n in PROMPTS if get_prompt(n).needs_text}
    assert needs == {"image-text", "video-text", "video-f1-detail-2ex-text", "video-f3-detail-2ex-text"}


def test_render_fills_row_text():
    spec = get_prompt("video-text")
    out = render(spec, "a red car {on} a road")
    assert "Some information about the image is 'a red car {on} a road'." in out
    assert "{}" not in out
    assert render(get_prompt("video"), "ignored") == PROMPTS["video"][1]


@pytest.mark.parametrize("empty", [None, "", "  ", float("nan")])
def test_text_prompt_without_text_is_a_row_error(empty):
    with pytest.raises(VidcapError) as exc:
        render(get_prompt("image-text"), empty)
    assert exc.value.code == "empty_text"


def test_unknown_prompt_lists_names():
    with pytest.raises(UsageError, match="video-f3-detail-3ex"):
        get_prompt("nope")


def test_custom_prompt():
    spec = custom_prompt("  Caption this. Hint: {}\n")
    assert spec.needs_text and render(spec, "x") == "Caption this. Hint: x"
    with pytest.raises(UsageError):
        custom_prompt("   ")
