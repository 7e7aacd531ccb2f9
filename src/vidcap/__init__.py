"""vidcap: captions, camera motion and tags for large video collections."""

import time as _time

__version__ = "0.1.0"
STARTED = _time.perf_counter()  # when vidcap was imported: the run's figures count "since start" from here
