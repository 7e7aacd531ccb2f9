"""Video and image paths on the web and on object stores: a local HTTP server (with, without and silently
ignoring Range requests) and a local S3 endpoint (moto's server) serve real clips; frames read through them
equal the local file's, each byte is fetched once when ranges work, and every way a URL fails is the same
per-row code as a local file's."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from clirun import cli_env, vidcap
from httpserver import HTTPFiles
from media import make_image, make_text_as_video, make_video, real_videos

from vidcap.errors import DECODE, ENVIRONMENT, MISSING, NOT_A_FILE, TIMEOUT, VidcapError
from vidcap.frames import sample_frames

pytest.importorskip("aiohttp")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    make_video(root / "moov_last.mp4", n_frames=60, gop=12)  # FFmpeg seeks to the end for the index
    make_video(root / "faststart.mp4", n_frames=40, faststart=True)
    make_video(root / "clip.mkv", n_frames=30)
    make_image(root / "still.png", index=5)
    make_text_as_video(root / "text.mp4")
    (root / "empty.mp4").write_bytes(b"")
    (root / "dir").mkdir()
    real = real_videos()
    for name in ("vtest.avi", "bikes.mp4"):  # real footage, larger than one 4 MiB range request (vtest.avi)
        if name in real:
            shutil.copy(real[name], root / name)
    return root


def served(media) -> list[str]:
    return sorted(
        p.name
        for p in media.iterdir()
        if p.suffix in (".mp4", ".mkv", ".avi", ".png") and p.stat().st_size > 0 and p.name != "text.mp4"
    )


def assert_same(url: str, local) -> None:
    got, want = sample_frames(url, 8), sample_frames(str(local), 8)
    assert got.indices == want.indices and got.num_frames == want.num_frames and got.is_image == want.is_image
    np.testing.assert_array_equal(got.frames, want.frames)


@pytest.mark.parametrize("ranges", [True, False, "ignored"])
def test_http_clips_decode_like_the_local_files(media, ranges):
    server = HTTPFiles(media, ranges=ranges)
    try:
        for name in served(media):
            before = server.sent()
            assert_same(f"{server.url}/{name}", media / name)
            size = (media / name).stat().st_size
            if ranges is True:  # read in place: every byte at most once, plus the 4 KiB head and a 1-byte probe
                assert server.sent() - before <= size + 4097, name
    finally:
        server.stop()


def test_http_failures_are_the_local_codes(media):
    server = HTTPFiles(media)
    try:
        cases = {
            "gone.mp4": MISSING,
            "text.mp4": DECODE,
            "empty.mp4": DECODE,
            "private/faststart.mp4": ENVIRONMENT,  # credentials: redone on the next run
            "broken/faststart.mp4": TIMEOUT,
        }
        for name, code in cases.items():
            with pytest.raises(VidcapError) as err:
                sample_frames(f"{server.url}/{name}", 4)
            assert err.value.code == code, (name, err.value)
    finally:
        server.stop()
    with pytest.raises(VidcapError) as err:  # the server is gone: retried on resume, not "missing"
        sample_frames(f"{server.url}/faststart.mp4", 4)
    assert err.value.code == TIMEOUT and "retried on resume" in err.value.message


def test_an_unknown_scheme_or_missing_package_is_one_row_error():
    with pytest.raises(VidcapError) as err:
        sample_frames("nosuchscheme://bucket/a.mp4", 4)
    assert err.value.code == DECODE and "nosuchscheme://" in err.value.message


def test_a_host_name_that_does_not_resolve_is_retried_on_resume():
    """A failed name lookup (a DNS outage) is the network's fault, not the file's: retried, as a refused
    connection is. fsspec's FTP filesystem raised socket.gaierror bare, and the row was a `decode` failure."""
    pytest.importorskip("fsspec")
    with pytest.raises(VidcapError) as err:
        sample_frames("ftp://no-such-host.invalid/a.mp4", 4)
    assert err.value.code == TIMEOUT and "retried on resume" in err.value.message


@pytest.fixture(scope="module")
def s3(media):
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    from s3server import S3

    server = S3()
    server.bucket("clips")
    for p in media.iterdir():
        if p.is_file():
            server.fs.put_file(str(p), f"clips/{p.name}")
    server.fs.mkdir("clips/dir/")
    server.fs.pipe_file("clips/dir/x.mp4", (media / "faststart.mp4").read_bytes())
    yield server
    server.stop()


def test_s3_clips_decode_and_fail_like_local_files(media, s3, monkeypatch):
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    for name in served(media):
        assert_same(f"s3://clips/{name}", media / name)
    cases = {
        "s3://clips/gone.mp4": MISSING,
        "s3://nobucket/a.mp4": MISSING,
        "s3://clips/dir": NOT_A_FILE,
        "s3://clips/text.mp4": DECODE,
        "s3://clips/empty.mp4": DECODE,
    }
    for url, code in cases.items():
        with pytest.raises(VidcapError) as err:
            sample_frames(url, 4)
        assert err.value.code == code, (url, err.value)


def test_caption_and_motion_runs_read_urls_with_per_row_errors(media, s3, tmp_path):
    """The user's path: a manifest mixing local, http:// and s3:// rows, run with decode workers."""
    server = HTTPFiles(media)
    try:
        names = ["faststart.mp4", "moov_last.mp4", "still.png"]
        rows = [str(media / n) for n in names] + [f"{server.url}/{n}" for n in names]
        rows += [f"s3://clips/{n}" for n in names]
        rows += [f"{server.url}/gone.mp4", "s3://clips/gone.mp4", f"{server.url}/text.mp4"]
        pd.DataFrame({"path": rows}).to_csv(tmp_path / "m.csv", index=False)
        env = cli_env(**s3.env)
        proc = vidcap(
            "caption", tmp_path / "m.csv", "-o", tmp_path / "c.csv", "--model", "fake", "--workers", "2", env=env
        )
        assert "9 ok, 3 failed (decode: 1, missing: 2)" in proc.stderr
        out = pd.read_csv(tmp_path / "c.csv")
        ok = out[out.status == "ok"]
        assert len(ok) == 9
        for col in ("num_frames", "frame_idx", "text", "width", "height"):
            local, http, s3_rows = ok[col][:3].tolist(), ok[col][3:6].tolist(), ok[col][6:9].tolist()
            if col == "text":  # the fake caption names the clip: compare the file name part only
                local, http, s3_rows = (
                    [t.replace(p, "") for t, p in zip(v, ok.path[i : i + 3], strict=False)]
                    for i, v in ((0, local), (3, http), (6, s3_rows))
                )
            assert local == http == s3_rows, col
        proc = vidcap("motion", tmp_path / "m.csv", "-o", tmp_path / "mo.csv", "--workers", "1", env=env)
        mo = pd.read_csv(tmp_path / "mo.csv")
        assert mo.status.tolist() == ["ok"] * 9 + ["failed"] * 3
        assert mo.cmotion[:3].tolist() == mo.cmotion[3:6].tolist() == mo.cmotion[6:9].tolist()
    finally:
        server.stop()


def test_a_tilde_path_in_a_manifest_is_the_users_home(media, tmp_path):
    home = tmp_path / "home"
    (home / "clips").mkdir(parents=True)
    shutil.copy(media / "faststart.mp4", home / "clips" / "a.mp4")
    pd.DataFrame({"path": ["~/clips/a.mp4", "file://" + str(home / "clips" / "a.mp4")]}).to_csv(
        tmp_path / "m.csv", index=False
    )
    vidcap("caption", tmp_path / "m.csv", "--model", "fake", "--workers", "0", "-q", HOME=str(home))
    out = pd.read_csv(tmp_path / "m_caption.csv")
    assert out.status.tolist() == ["ok", "ok"] and out.num_frames.tolist() == [40, 40]


def test_a_server_that_never_answers_is_a_timeout_row(monkeypatch):
    import socket

    monkeypatch.setenv("VIDCAP_REMOTE_TIMEOUT", "1")
    with socket.socket() as silent:  # listens (the kernel completes the handshake) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/clip.mp4"
        with pytest.raises(VidcapError) as err:
            sample_frames(url, 4)
    assert err.value.code == TIMEOUT


def test_an_mp4_scan_reads_the_index_not_the_frames(media, tmp_path):
    """Remote MP4/MOV: the scan takes counts, timestamps and keyframes from the index (frame data answered with
    zeros) and must equal the full scan; then only the frames decoded are fetched."""
    from vidcap.frames.container import open_input, scan, video_stream
    from vidcap.frames.decode import _index_scan
    from vidcap.frames.remote import RemoteFile

    make_video(tmp_path / "big.mp4", n_frames=150, size=(1280, 720), gop=15, preset="ultrafast")
    make_video(tmp_path / "vfr.mp4", n_frames=40, vfr=True, gop=8)
    make_video(tmp_path / "rot.mov", n_frames=30, rotation=90)
    for name in ("moov_last.mp4", "faststart.mp4", "bikes.mp4"):
        if (media / name).exists():
            shutil.copy(media / name, tmp_path / name)
    server = HTTPFiles(tmp_path)
    try:
        for p in sorted(tmp_path.glob("*.m*")):
            with open_input(str(p)) as c:
                want = scan(c, video_stream(c))
            with RemoteFile(f"{server.url}/{p.name}") as source:
                got = _index_scan(source)
            assert got == want, p.name
        big = tmp_path / "big.mp4"
        before = server.sent()
        assert_same(f"{server.url}/big.mp4", big)  # 8 frames: both reads agree
        one = server.sent()
        got = sample_frames(f"{server.url}/big.mp4", 1, "points")
        np.testing.assert_array_equal(got.frames, sample_frames(str(big), 1, "points").frames)
        assert server.sent() - one < 0.5 * big.stat().st_size, (one - before, server.sent() - one)
    finally:
        server.stop()
