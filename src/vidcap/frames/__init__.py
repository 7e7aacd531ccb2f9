"""Frame sampling: K frame-exact RGB frames per clip (or the single frame of a still image)."""

from vidcap.frames.decode import Frames, sample_frames, target_size
from vidcap.frames.images import IMAGE_EXTENSIONS, is_image_file, sniff_image
from vidcap.frames.positions import POSITIONS, frame_indices

__all__ = [
    "Frames",
    "sample_frames",
    "frame_indices",
    "POSITIONS",
    "IMAGE_EXTENSIONS",
    "is_image_file",
    "sniff_image",
    "target_size",
]
