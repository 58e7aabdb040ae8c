"""keep_freed_memory: batch after batch of large buffers reuse the pages the previous batch
freed, in the main thread and in a worker thread, instead of mapping and faulting them in anew
(glibc's default for blocks over its mmap threshold). Measured on torch tensors, the decoders'
buffers, with huge pages off for the child process (they would hide the 4 KB faults)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")

_CHILD = textwrap.dedent("""
    import ctypes, json, resource, sys, threading
    from polyasr.host_memory import keep_freed_memory

    # 4 KB pages whatever the machine's transparent-huge-page mode (PR_SET_THP_DISABLE): with huge
    # pages a fresh mapping faults once per 2 MB, and the count below would not show it
    assert ctypes.CDLL(None).prctl(41, 1, 0, 0, 0) == 0

    applied = keep_freed_memory() if sys.argv[1] == "keep" else None  # first, as the CLI does
    import torch

    MB = 2**20

    def batch():  # a decode's pattern: activation temporaries, and buffers held to its end (caches)
        held, x = [], torch.ones(24 * MB // 4)
        for _ in range(6):
            x = x * 2
            held.append(torch.ones(40 * MB // 4))
        return held

    def faults_of_later_batches():  # once two batches have set the heap up
        batch(), batch()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        batch(), batch()
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    out = {"applied": applied, "main": faults_of_later_batches()}
    thread = threading.Thread(target=lambda: out.update(thread=faults_of_later_batches()))
    thread.start(); thread.join()
    print(json.dumps(out))
""")


def _faults(mode: str) -> dict:
    run = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_later_batches_reuse_freed_pages():
    pages = 2 * 6 * 40 * 2**20 // 4096  # the held buffers of two batches
    default, kept = _faults("default"), _faults("keep")
    assert kept["applied"] is True
    # glibc's default: most 40 MB buffers are mapped anew and each of their pages faulted in (its
    # dynamic mmap threshold lets a few land in the heap), in both threads
    assert default["main"] > pages / 2 and default["thread"] > pages / 2, default
    # kept: freed pages serve most of the next batches (how many are mapped anew depends on where
    # glibc finds room for each size; a 16-request Whisper decode measured ~0 after its first batch)
    assert kept["main"] + kept["thread"] < (default["main"] + default["thread"]) / 2, (default, kept)
