"""Keeping freed host memory for reuse, in processes that run batch after batch (the CLI, the server).

A batched decode allocates buffers of tens of megabytes (the windows' cross-attention keys and
values, the beams' KV caches, each step's logits) and frees them when the batch is done; the
next batch allocates them again. glibc's malloc serves blocks over its mmap threshold (at most
32 MB, dynamically) with fresh mappings and unmaps them on free, and a thread other than the
main one allocates from an arena of at most 64 MB heaps, so each batch faults in every page of
its buffers anew, one fault per 4 KB: about a fifth of a 16-request batched Whisper base decode
on two cores. `keep_freed_memory` makes every thread allocate from the main heap, with no size going
to mmap and up to `KEEP_BYTES` of freed memory kept at its top, so the next batch reuses pages
already mapped. The cost is that memory freed after a peak stays with the process (up to
KEEP_BYTES above what it uses), which is what a server that meets the same peak again wants.

It changes the whole process's allocator, so the library never calls it on import: `polyasr`'s
CLI and server do, at start, and an application that transcribes in batches can.
"""

from __future__ import annotations

import ctypes
import sys

KEEP_BYTES = 1 << 30  # blocks under this never mmap; this much free memory may stay at the heap's top

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep and reuse freed memory (see the module docstring); True when it
    did. Elsewhere (macOS, musl) it changes nothing and returns False. Call it before starting
    the threads that decode: a thread that has allocated already keeps its own arena."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, KEEP_BYTES), (_M_TRIM_THRESHOLD, KEEP_BYTES))
    return all(mallopt(param, value) == 1 for param, value in settings)
