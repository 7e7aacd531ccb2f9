"""vidcap: captions, camera motion and tags for large video collections."""

__version__ = "0.1.0"
