"""ctc_greedy (polyasr._decode) vs a vectorised numpy collapse on one hour of CTC frames.

One hour at GigaAM's 40 ms frames = 90,000 frames; the batch is 8 items of that length, as ids
(argmax taken on the device) and as (B, T, 34) float32 scores (argmax taken by the loop).
Run: `pytest bench/bench_ctc.py --benchmark-only`.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import record

from polyasr.models.ctc_decode import ctc_greedy

BATCH, FRAMES, VOCAB, BLANK = 8, 90_000, 34, 33
GROUP_IDS = f"CTC greedy, {BATCH} x 1 h of ids"
GROUP_SCORES = f"CTC greedy, {BATCH} x 1 h of (T, {VOCAB}) scores"


@pytest.fixture(scope="module")
def scores():
    rng = np.random.default_rng(0)
    s = rng.standard_normal((BATCH, FRAMES, VOCAB), dtype=np.float32)
    s[..., BLANK] += 1.5  # blank-dominated, as CTC output is
    return s


def numpy_collapse(ids: np.ndarray, blank: int):
    """The best plain-numpy alternative: boolean masks over the whole batch at once."""
    prev = np.concatenate([np.full((ids.shape[0], 1), -1, ids.dtype), ids[:, :-1]], axis=1)
    keep = (ids != prev) & (ids != blank)
    return [(row[k], np.flatnonzero(k)) for row, k in zip(ids, keep, strict=True)]


def test_numpy_ids(benchmark, scores):
    ids = scores.argmax(-1)
    benchmark.pedantic(numpy_collapse, args=(ids, BLANK), rounds=5, warmup_rounds=1)
    record(GROUP_IDS, "numpy (vectorised)", "numpy (vectorised)", benchmark)


def test_extension_ids(benchmark, scores):
    ids = scores.argmax(-1)
    out = benchmark.pedantic(ctc_greedy, args=(ids, None, BLANK), rounds=5, warmup_rounds=1)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(out, numpy_collapse(ids, BLANK), strict=True))
    record(GROUP_IDS, "numpy (vectorised)", "polyasr._decode", benchmark)


def test_numpy_scores(benchmark, scores):
    benchmark.pedantic(lambda: numpy_collapse(scores.argmax(-1), BLANK), rounds=5, warmup_rounds=1)
    record(GROUP_SCORES, "numpy argmax + collapse", "numpy argmax + collapse", benchmark)


def test_extension_scores(benchmark, scores):
    benchmark.pedantic(ctc_greedy, args=(scores, None, BLANK), rounds=5, warmup_rounds=1)
    record(GROUP_SCORES, "numpy argmax + collapse", "polyasr._decode", benchmark)
