"""Each backend's own frozen options: a setting that is not its own is refused in one sentence, nothing
changes options once built, and the fingerprints of outputs made before the split stay the same."""

from __future__ import annotations

import dataclasses

import pytest

from vidcap.backends.base import CaptionOptions
from vidcap.backends.llm import make_chat_backend
from vidcap.backends.options import (
    KINDS,
    APIChatOptions,
    APIOptions,
    BackendOptions,
    ChatOptions,
    LocalChatOptions,
    LocalModelOptions,
    PLLaVAOptions,
    VLMOptions,
)
from vidcap.backends.registry import make_backend, resolve_model
from vidcap.errors import UsageError
from vidcap.session import run_fingerprint
from vidcap.stages.caption import CaptionStage

# Written by vidcap before the options were split (main 44c81fa): a resume of such an output must match.
BEFORE = [
    (
        "fake",
        {"max_new_tokens": 100, "temperature": 0.5, "resize": 224, "heal": 2, "strip_prefix": True},
        {
            "stage": "caption",
            "model": "fake",
            "backend": "fake",
            "prompt": "video",
            "num_frames": 4,
            "strip_prefix": True,
            "max_new_tokens": 100,
            "temperature": 0.5,
            "resize": 224,
            "heal": 2,
        },
    ),
    (
        "fake",
        {"variants": ["short", "dense"]},
        {
            "stage": "caption",
            "model": "fake",
            "backend": "fake",
            "prompt": "short",
            "num_frames": 4,
            "variants": ["short", "dense"],
        },
    ),
    (
        "gpt-4o",
        {"detail": "low", "jpeg_quality": 80, "max_images": 4, "concurrency": 3},
        {
            "stage": "caption",
            "model": "gpt-4o",
            "backend": "openai",
            "prompt": "video-f3-detail-3ex",
            "num_frames": 3,
            "detail": "low",
            "jpeg_quality": 80,
            "max_images": 4,
        },
    ),
    (
        "qwen2.5-vl-7b",
        {
            "dtype": "float16",
            "max_pixels": 50176,
            "total_pixels": 1000000,
            "fps": 1.0,
            "max_frames": 16,
            "caption_format": "json",
            "schema": "opensora",
            "constrain": False,
        },
        {
            "stage": "caption",
            "model": "Qwen/Qwen2.5-VL-7B-Instruct",
            "backend": "hf-vlm",
            "prompt": "json-opensora",
            "num_frames": 16,
            "fps": 1.0,
            "max_frames": 16,
            "max_pixels": 50176,
            "total_pixels": 1000000,
            "dtype": "float16",
            "caption_format": "json",
            "schema": "opensora",
            "constrain": False,
            "schema_sha1": "797dda131e91",
        },
    ),
    (
        "pllava-7b",
        {"pooling_shape": [4, 8, 8], "lora_alpha": 2.0, "batch_size": 4},
        {
            "stage": "caption",
            "model": "ermu2001/pllava-7b",
            "backend": "hf-pllava",
            "prompt": "pllava",
            "num_frames": 4,
            "pooling_shape": [4, 8, 8],
            "lora_alpha": 2.0,
        },
    ),
]


@pytest.mark.parametrize(("model", "given", "expected"), BEFORE)
def test_fingerprints_of_earlier_outputs_stay_the_same(model, given, expected):
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}
    fp = run_fingerprint(CaptionStage(resolve_model(model), CaptionOptions(**values)))
    fp.pop("columns")
    assert fp == expected


@pytest.mark.parametrize(
    ("model", "kind"),
    [
        ("fake", BackendOptions),
        ("gpt-4o", APIOptions),
        ("qwen2.5-vl-7b", VLMOptions),
        ("llava-1.6-mistral-7b", VLMOptions),
        ("pllava-7b", PLLaVAOptions),
    ],
)
def test_each_backend_holds_its_own_frozen_options(model, kind):
    backend = make_backend(resolve_model(model), CaptionOptions(temperature=0.2))
    assert type(backend.options) is kind and backend.options.temperature == 0.2
    assert backend.takes == kind.names()
    with pytest.raises(dataclasses.FrozenInstanceError):
        backend.options.temperature = 0.5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        CaptionOptions().temperature = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("model", "given", "sentence"),
    [
        ("fake", {"dtype": "float16"}, "the fake backend does not use the option 'dtype' (--dtype); "),
        ("gpt-4o", {"lora_alpha": 2.0}, "the openai backend does not use the option 'lora_alpha' (--lora-alpha); "),
        ("qwen2.5-vl-7b", {"base_url": "http://x/v1"}, "the hf-vlm backend does not use the option 'base_url' "),
        ("pllava-7b", {"max_pixels": 1000}, "the hf-pllava backend does not use the option 'max_pixels' "),
    ],
)
def test_a_setting_another_backend_takes_is_refused_in_one_sentence(model, given, sentence):
    for options in (CaptionOptions(**given), given):  # the CLI's options, or a mapping (a config file)
        with pytest.raises(UsageError) as err:
            make_backend(resolve_model(model), options)
        text = str(err.value)
        assert text.startswith(sentence) and text.endswith("drop it or pick a backend that does.")
        assert text.count(". ") == 0 and "\n" not in text


def test_an_unknown_key_names_the_backends_options():
    with pytest.raises(UsageError, match=r"^unknown option 'fast' for the fake backend; its options: .*variants\.$"):
        make_backend(resolve_model("fake"), {"fast": True})
    backend = make_backend(resolve_model("fake"), {"temperature": 0.3, "batch_size": 2})
    assert (backend.options.temperature, backend.options.batch_size) == (0.3, 2)


def test_chat_backends_take_only_their_own_options():
    assert type(make_chat_backend("fake").options) is ChatOptions
    assert type(make_chat_backend("hf", "m", CaptionOptions(dtype="float16")).options) is LocalChatOptions
    api = make_chat_backend("openai", None, CaptionOptions(base_url="http://localhost:1/v1", concurrency=2))
    assert type(api.options) is APIChatOptions and api.options.concurrency == 2
    with pytest.raises(UsageError, match=r"^the fake backend does not use the option 'base_url' \(--base-url\); "):
        make_chat_backend("fake", None, CaptionOptions(base_url="http://localhost:1/v1"))
    with pytest.raises(UsageError, match=r"^the hf backend does not use the option 'heal' \(--heal\); "):
        make_chat_backend("hf", "m", CaptionOptions(heal=1))


def test_every_options_class_keeps_the_caption_options_defaults():
    """A setting left at its default is not in the fingerprint: each class must agree on what that is."""
    bag = {f.name: f.default for f in dataclasses.fields(CaptionOptions)}
    for kind in (*KINDS, BackendOptions, LocalModelOptions, ChatOptions):
        assert {f.name: f.default for f in dataclasses.fields(kind)}.items() <= bag.items(), kind
    assert set(bag) == set().union(*(kind.names() for kind in KINDS))  # every setting has a backend


def test_the_caption_stage_resolves_a_copy_and_leaves_the_given_options_alone():
    given = CaptionOptions(max_new_tokens=None, variants=("short", "dense"))
    stage = CaptionStage(resolve_model("fake"), given)
    assert given.max_new_tokens is None and stage.options.max_new_tokens == stage.backend.options.max_new_tokens
    assert stage.options.max_new_tokens == max(stage.plan.limits)
