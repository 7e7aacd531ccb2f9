"""Still images: recognised by their content (magic bytes), never by the file name alone."""

from __future__ import annotations

import numpy as np

from vidcap.errors import DECODE, VidcapError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

# FFmpeg demuxers that mean "this file is one still picture" (a fallback when the magic is unknown).
IMAGE_DEMUXERS = (
    "image2",
    "png_pipe",
    "jpeg_pipe",
    "webp_pipe",
    "bmp_pipe",
    "tiff_pipe",
    "jpegls_pipe",
    "j2k_pipe",
    "qoi_pipe",
    "dpx_pipe",
    "pam_pipe",
    "ppm_pipe",
    "pgm_pipe",
    "psd_pipe",
    "sgi_pipe",
    "xpm_pipe",
    "exr_pipe",
    "jpegxl_pipe",
)


def sniff_image(head: bytes) -> str | None:
    """The still-image format the first bytes of a file announce, or None (GIF counts as video)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head.startswith(b"BM") and len(head) >= 18 and head[14] in (12, 40, 52, 56, 64, 108, 124):
        return "bmp"  # the DIB header size pins BMP down; "BM" alone is too weak
    return None


def is_image_file(path) -> bool:
    """Whether the file (a path, a URL, or an open binary file, which is left at its start) is a still."""
    if hasattr(path, "read"):
        path.seek(0)
        head = path.read(32)
        path.seek(0)
        return sniff_image(head) is not None
    from vidcap.frames.remote import head, is_url

    if is_url(path):
        return sniff_image(head(path)) is not None
    with open(path, "rb") as f:
        return sniff_image(f.read(32)) is not None


def load_image(path, min_short: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """RGB uint8 [H,W,3] of an image file as viewers show it (EXIF orientation applied), and the
    picture's full (width, height) as displayed.

    min_short: the caller will downscale to this short side, so a big JPEG may be decoded at
    1/2, 1/4 or 1/8 scale (never below it): much faster for camera photos.
    """
    from PIL import Image, ImageOps

    from vidcap.frames.remote import RemoteFile, is_url

    if is_url(path):
        with RemoteFile(path) as f:
            return load_image(f, min_short)
    img: Image.Image  # an ImageFile, then exif_transpose's plain Image
    try:
        with Image.open(path) as img:
            w, h = img.size
            if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientations that turn 90 degrees
                w, h = h, w
            if min_short and img.format == "JPEG":
                img.draft("RGB", (min_short, min_short))
            img = ImageOps.exif_transpose(img)
            # np.array, not asarray: a read-only view makes torch warn "non-writable NumPy array" downstream
            return np.array(img.convert("RGB")), (w, h)
    except Exception as e:  # Pillow raises many kinds (OSError, SyntaxError, DecompressionBombError)
        raise VidcapError(DECODE, f"image: {e}".replace(str(path), "").strip()) from None
