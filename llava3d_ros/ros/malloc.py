"""glibc malloc settings for a process that takes camera images from DDS.

Each raw 640×480 message reaches Python as a fresh ~1 MB buffer. By default glibc serves a
buffer that size with mmap (or trims it off the heap again when it is freed), so the pages of
every frame fault in and are zeroed anew: at 30 Hz RGB-D that cost more CPU than everything
else the node does with the frames. With these settings buffers up to 32 MiB come from the
heap, and up to 128 MiB of freed heap is kept for reuse instead of being returned at once.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt(3) parameter numbers
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
SETTINGS = ((M_MMAP_THRESHOLD, 32 * 2**20), (M_TRIM_THRESHOLD, 128 * 2**20))


def tune_malloc() -> bool:
    """Apply ``SETTINGS`` to this process; False where not applied (not glibc, or MALLOC_* set).

    A user who sets glibc's own variables (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, ...)
    keeps them: nothing is changed then.
    """
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return all(mallopt(param, value) == 1 for param, value in SETTINGS)
