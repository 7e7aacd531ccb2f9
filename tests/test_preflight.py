"""Missing pieces said up front: a package a run needs (the openai client, aiohttp for https:// rows) ends the
run in one sentence before any row, with no parts left; rows that failed because of the machine (a certificate,
credentials, a missing package) are redone by a plain rerun once it is fixed."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from clirun import cli_env, vidcap
from fake_openai_server import FakeOpenAIServer
from httpserver import HTTPFiles
from media import make_video

from vidcap import preflight
from vidcap.errors import CERTIFICATE, ENVIRONMENT, RETRYABLE, VidcapError, first_line, format_error
from vidcap.frames import sample_frames
from vidcap.preflight import manifest_schemes, missing_for

# A sitecustomize that makes the modules named in VIDCAP_TEST_BLOCK look uninstalled (find_spec and import).
BLOCKER = """
import os, sys
BLOCKED = set(filter(None, os.environ.get("VIDCAP_TEST_BLOCK", "").split(",")))

class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Blocker())
"""


@pytest.fixture
def without(tmp_path):
    """cli_env() in which the given modules cannot be imported."""
    folder = tmp_path / "blocker"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(BLOCKER)

    def env(*modules: str) -> dict:
        base = cli_env(VIDCAP_TEST_BLOCK=",".join(modules))
        base["PYTHONPATH"] = f"{folder}{os.pathsep}{base['PYTHONPATH']}"
        return base

    return env


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pre")
    for i in range(3):
        make_video(root / f"c{i}.mp4", n_frames=12)
    return root


def test_the_api_backend_without_openai_is_one_sentence_and_no_parts(clips, tmp_path, without):
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(clips / f"c{i}.mp4") for i in range(3)]}).to_csv(manifest, index=False)
    out = tmp_path / "api.csv"
    with FakeOpenAIServer() as server:
        args = ["caption", manifest, "-o", out, "--backend", "openai", "--model", "m", "--base-url", server.base_url]
        proc = vidcap(*args, check=False, env=without("openai"))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "pip install 'vidcap[api]'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert not server.hits and not list(tmp_path.glob("api.csv*"))  # nothing sent, no parts left behind
        vidcap(*args, "--workers", "0")  # with the package there, the same command runs
        assert len(server.hits) == 3


def test_https_rows_without_aiohttp_stop_before_the_first_row_then_finish(clips, tmp_path, without):
    server = HTTPFiles(clips)
    try:
        manifest = tmp_path / "web.csv"
        pd.DataFrame({"path": [f"{server.url}/c{i}.mp4" for i in range(3)]}).to_csv(manifest, index=False)
        out = tmp_path / "web_out.csv"
        args = ["caption", manifest, "-o", out, "--model", "fake", "--workers", "0"]
        proc = vidcap(*args, check=False, env=without("aiohttp"))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "aiohttp" in proc.stderr and "pip install 'vidcap[remote]'" in proc.stderr
        assert not list(tmp_path.glob("web_out.csv*")) and server.sent() == 0
        vidcap(*args)  # installed again: a plain rerun captions every row
        assert (pd.read_csv(out)["status"] == "ok").all()
    finally:
        server.stop()


def test_an_untrusted_certificate_has_its_own_code_and_is_redone(clips, tmp_path):
    server = HTTPFiles(clips, self_signed=True)
    try:
        with pytest.raises(VidcapError) as err:
            sample_frames(f"{server.url}/c0.mp4", 4)
        manifest = tmp_path / "tls.csv"
        pd.DataFrame({"path": [f"{server.url}/c0.mp4"]}).to_csv(manifest, index=False)
        out = tmp_path / "tls_out.csv"
        vidcap("caption", manifest, "-o", out, "--model", "fake", "--workers", "0", check=False)
        first = pd.read_csv(out)
    finally:
        server.stop()
    assert err.value.code == CERTIFICATE and CERTIFICATE in RETRYABLE, err.value
    assert "not trusted" in err.value.message and "SSL_CERT_FILE" in err.value.message
    assert first["error"].iloc[0].startswith("certificate: ")
    assert ENVIRONMENT in RETRYABLE


def test_long_messages_are_cut_at_a_word():
    text = "could not verify " + "certificate chain " * 20
    cut = first_line(ValueError(text), 60)
    assert (
        len(cut) <= 60
        and cut.endswith("...")
        and cut[:-3].split()[-1] in {"could", "not", "verify", "chain", "certificate"}
    )
    assert format_error("x", "word " * 100).endswith("word...")


def test_missing_for_names_one_install_line(monkeypatch):
    absent = {"openai", "ray", "aiohttp", "s3fs"}
    monkeypatch.setattr(preflight, "installed", lambda module: module not in absent)
    what, args = missing_for("openai", {"https", "s3"}, "ray")
    assert args == ["'vidcap[api,ray,remote]'", "s3fs"] and len(what) == 4


def test_manifest_schemes_reads_only_the_path_column(tmp_path):
    m = tmp_path / "m.csv"
    pd.DataFrame({"path": ["a.mp4", "https://x/y.mp4", "S3://b/c.mp4"], "other": [1, 2, 3]}).to_csv(m, index=False)
    assert manifest_schemes(m) == {"https", "s3"}
    pd.DataFrame({"path": ["a.mp4", "file:///x.mp4"]}).to_parquet(tmp_path / "m.parquet")
    assert manifest_schemes(tmp_path / "m.parquet") == set()
