"""Reuse of freed CPU memory: glibc's malloc hands every freed block above its mmap threshold (at most 32 MiB,
raised dynamically) back to the operating system, so each large tensor of a forward or backward pass is mapped
again and page-faulted in, one zeroed 4 KiB page at a time. RAFT-Stereo base on 1x3x384x512 took 650,000 page
faults per eval forward and 1.2 million per training step that way (2.5 GB and 4.8 GB zeroed by the kernel),
about a quarter of its time; with the blocks kept for reuse, 11,000 and 25,000. The entry scripts apply this
once at start-up (``utils.cli.run``); CUDA memory has its own caching allocator and is not affected.
``STEREO_KEEP_FREED_MEMORY=0`` in the environment leaves glibc's default (lower peak memory, more time)."""

import ctypes
import os
import sys

ENVIRONMENT_SWITCH = "STEREO_KEEP_FREED_MEMORY"

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30


def keep_freed_memory(limit: int = KEEP_BYTES) -> bool:
    """Let glibc serve blocks below `limit` bytes from the heap and keep up to `limit` bytes of freed memory at
    its top, instead of unmapping them; True where applied (Linux with glibc), False elsewhere (no effect) and
    where ``STEREO_KEEP_FREED_MEMORY=0`` is set.

    The process's resident memory then stays near its peak between steps, as a GPU's caching allocator does,
    and the peak rises where freed blocks cannot be reused in place (RAFT-Stereo base: eval 1.42 -> 1.64 GB,
    training step 5.7 -> 6.3 GB; realtime within 0.05 GB): set the switch where memory is tighter than time."""
    if not sys.platform.startswith("linux") or os.environ.get(ENVIRONMENT_SWITCH) == "0":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # another C library (musl), or none of that name
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, limit)) and bool(mallopt(M_TRIM_THRESHOLD, limit))
