"""`polyasr batch` in one process: reader threads decode audio ahead of the model, the model takes
files one by one or, when it batches across files, `batch_size` at a time."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from polyasr.batch.work import Decoded, decode, group_size, transcribe_group
from polyasr.options import TranscribeOptions


def decoded_ahead(paths: Iterable[str], workers: int, ahead: int) -> Iterator[Decoded]:
    """`paths` decoded on `workers` threads, in order, at most `ahead` files decoded and not yet taken:
    memory stays bounded whatever the number of files, and the model never waits on a read that could
    have started earlier. (libsndfile and soxr release the GIL while they work.)"""
    paths = iter(paths)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="polyasr-read") as pool:
        pending = deque(
            pool.submit(decode, p) for _, p in zip(range(ahead), paths)
        )  # range first: zip must not pull a path it drops
        while pending:
            done = pending.popleft().result()
            nxt = next(paths, None)
            if nxt is not None:
                pending.append(pool.submit(decode, nxt))
            yield done


def run_local(
    engine, paths: list[str], options: TranscribeOptions, fmt: str, readers: int | None = None
) -> Iterator[tuple[dict, str | None]]:
    """Yield (record, per-file output) for every path, as each group of files finishes."""
    size = group_size(engine, options)
    readers = readers or min(4, os.cpu_count() or 1)
    group: list[Decoded] = []
    for item in decoded_ahead(paths, readers, ahead=max(2 * size, 2 * readers)):
        group.append(item)
        if len(group) == size:
            yield from transcribe_group(engine, group, options, fmt)
            group = []
    if group:
        yield from transcribe_group(engine, group, options, fmt)
