"""models/chunking.py: the plan tiles the audio, respects its lengths, cuts in pauses; stitching is exact."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polyasr.errors import InvalidOptionError
from polyasr.models.chunking import Chunk, iter_chunk_batches, keep_emissions, plan_chunks


def stitch(chunks, pieces, sr):
    """Every chunk's emissions through the rule the pipelines apply per chunk, joined in order."""
    last = len(chunks) - 1
    return [
        e
        for i, (c, p) in enumerate(zip(chunks, pieces, strict=True))
        for e in keep_emissions(p, c, sr, first=i == 0, last=i == last)
    ]


@st.composite
def plans(draw):
    """(audio, sample_rate, max_secs, overlap_secs, min_secs): noise with random silent gaps."""
    sr = draw(st.sampled_from([50, 1000, 8000]))
    max_secs = draw(st.floats(1.0, 30.0))
    overlap = draw(st.floats(0.0, max_secs * 0.6))
    min_secs = draw(st.one_of(st.none(), st.floats(overlap + 0.05, max_secs)))
    n = draw(st.integers(0, int(sr * max_secs * 6)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    audio = rng.standard_normal(n).astype(np.float32)
    for _ in range(draw(st.integers(0, 10))):
        a = int(rng.integers(0, max(n, 1)))
        audio[a : a + int(rng.integers(0, sr * 2))] = 0.0
    return audio, sr, max_secs, overlap, min_secs


def check_tiling(chunks: list[Chunk], n: int):
    """Kept regions tile [0, n) exactly, each inside its chunk, and chunks cover the file in order."""
    assert chunks[0].start == chunks[0].keep_start == 0
    assert chunks[-1].end == chunks[-1].keep_end == n
    for c in chunks:
        assert 0 <= c.start <= c.keep_start <= c.keep_end <= c.end <= n
        assert c.keep_start < c.keep_end or n == 0
    for a, b in zip(chunks, chunks[1:]):
        assert a.keep_end == b.keep_start
        assert a.start < b.start and a.end < b.end


@settings(max_examples=200, deadline=None)
@given(plans())
def test_plan_tiles_and_respects_lengths(case):
    audio, sr, max_secs, overlap_secs, min_secs = case
    chunks = plan_chunks(audio, sr, max_secs, overlap_secs, min_secs)
    n, max_len, overlap = len(audio), int(np.floor(max_secs * sr)), round(overlap_secs * sr)
    check_tiling(chunks, n)
    assert all(c.end - c.start <= max_len for c in chunks)
    if n <= max_len:
        assert chunks == [Chunk(0, n, 0, n)]
    # Consecutive chunks share exactly the overlap, centred on the cut; the file ends get no context.
    for a, b in zip(chunks, chunks[1:]):
        assert a.end - b.start == overlap
        assert a.keep_end - b.start == overlap // 2
        assert a.end - a.keep_end == overlap - overlap // 2
    assert plan_chunks(audio.copy(), sr, max_secs, overlap_secs, min_secs) == chunks  # deterministic


def test_plan_respects_min_secs():
    sr, audio = 1000, np.zeros(100_000, np.float32)
    chunks = plan_chunks(audio, sr, max_secs=10.0, overlap_secs=1.0, min_secs=7.0)
    assert all(c.end - c.start >= 7000 for c in chunks[:-1])
    check_tiling(chunks, len(audio))


@st.composite
def bursts(draw):
    """Tone bursts of 0.2-3 s separated by 300 ms pauses (digital silence or a noise floor)."""
    sr = draw(st.sampled_from([8000, 16000]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    floor = draw(st.sampled_from([0.0, 1e-3]))
    pieces, pauses, pos = [], [], 0
    for _ in range(draw(st.integers(5, 40))):
        n = int(rng.uniform(0.2, 3.0) * sr)
        t = np.arange(n) / sr
        pieces.append(rng.uniform(0.1, 0.9) * np.sin(2 * np.pi * rng.uniform(100, 3000) * t + rng.uniform(0, 6)))
        pos += n
        gap = int(0.3 * sr)
        pieces.append(floor * rng.standard_normal(gap))
        pauses.append((pos, pos + gap))
        pos += gap
    return np.concatenate(pieces).astype(np.float32), sr, pauses


@settings(max_examples=60, deadline=None)
@given(bursts(), st.sampled_from([8.0, 12.0, 25.0]))
def test_cuts_land_in_pauses(case, max_secs):
    # The default search window (the last (max_secs - overlap) / 2 of a chunk, >= 3.5 s here) always
    # holds a whole burst + pause, so a pause is always there to be found.
    audio, sr, pauses = case
    chunks = plan_chunks(audio, sr, max_secs, overlap_secs=1.0)
    check_tiling(chunks, len(audio))
    starts = np.array([a for a, _ in pauses])
    for c in chunks[:-1]:
        cut = c.keep_end
        i = np.searchsorted(starts, cut, side="right") - 1
        assert i >= 0 and pauses[i][0] <= cut < pauses[i][1], f"cut at {cut / sr:.3f} s is not in a pause"


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["tone", "noise", "modulated"]), st.integers(0, 2**32 - 1), st.floats(2.0, 25.0))
def test_no_pause_cuts_at_max_length(kind, seed, max_secs):
    sr = 8000
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * max_secs * 4.5)) / sr
    if kind == "tone":
        audio = np.sin(2 * np.pi * 440 * t)
    elif kind == "noise":
        audio = rng.standard_normal(t.size)
    else:  # speech-like syllable rate, but the envelope never drops 20 dB
        audio = (1.0 + 0.5 * np.sin(2 * np.pi * 4 * t)) * np.sin(2 * np.pi * 300 * t)
    chunks = plan_chunks(audio.astype(np.float32), sr, max_secs, overlap_secs=1.0)
    check_tiling(chunks, t.size)
    assert len(chunks) > 1
    assert all(c.end - c.start == int(np.floor(max_secs * sr)) for c in chunks[:-1])


@st.composite
def emission_cases(draw):
    """A plan plus ground-truth (token, time, payload) emissions, some exactly on cuts or repeated."""
    audio, sr, max_secs, overlap, min_secs = draw(plans())
    chunks = plan_chunks(audio, sr, max_secs, overlap, min_secs)
    n = len(audio)
    samples = draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=60)) if n else []
    cuts = [c.keep_end for c in chunks[:-1]]
    if cuts:
        samples += draw(st.lists(st.sampled_from(cuts), max_size=5))
    samples.sort()
    truth = [(draw(st.integers(0, 1000)), s / sr, float(i)) for i, s in enumerate(samples)]
    return chunks, sr, truth


@settings(max_examples=200, deadline=None)
@given(emission_cases())
def test_stitch_recovers_ground_truth(case):
    chunks, sr, truth = case
    # Every chunk emits everything it hears, so the overlaps hold duplicates.
    pieces = [[e for e in truth if c.start <= round(e[1] * sr) < c.end] for c in chunks]
    assert stitch(chunks, pieces, sr) == truth


def test_emission_on_the_cut_goes_to_the_later_chunk():
    chunks = [Chunk(0, 1200, 0, 1000), Chunk(800, 2000, 1000, 2000)]
    sr = 1000
    # Each neighbour computed the time of the same emission with its own float rounding.
    pieces = [[(7, 1.0 - 1e-12, "first")], [(7, 1.0 + 1e-12, "second")]]
    assert stitch(chunks, pieces, sr) == [(7, 1.0 + 1e-12, "second")]
    assert stitch(chunks, [[(7, 0.999, "a")], [(7, 0.999, "b")]], sr) == [(7, 0.999, "a")]


def test_file_ends_keep_times_outside_the_audio():
    chunk = Chunk(0, 1000, 0, 1000)
    assert keep_emissions([(1, -0.01), (2, 1.02)], chunk, 1000, first=True, last=True) == [(1, -0.01), (2, 1.02)]
    assert keep_emissions([(1, -0.01), (2, 1.02)], chunk, 1000, first=False, last=False) == []


def test_batches_are_bounded_views_in_order():
    sr = 1000
    audio = np.random.default_rng(0).standard_normal(200_000).astype(np.float32)
    chunks = plan_chunks(audio, sr, max_secs=10.0)
    batches = list(iter_chunk_batches(audio, chunks, batch_size=3))
    assert all(1 <= len(b) <= 3 for b in batches)
    flat = [pair for b in batches for pair in b]
    assert [c for c, _ in flat] == chunks
    for c, x in flat:
        assert np.shares_memory(x, audio) and x.shape == (c.end - c.start,)
        np.testing.assert_array_equal(x, audio[c.start : c.end])
    with pytest.raises(InvalidOptionError):
        next(iter_chunk_batches(audio, chunks, batch_size=0))


@pytest.mark.parametrize(
    ("max_secs", "overlap", "min_secs"),
    [
        (1.0, 1.0, None),
        (0.0, 0.0, None),
        (float("nan"), 1.0, None),
        (10.0, -1.0, None),
        (10.0, 1.0, 1.0),
        (10.0, 1.0, 11.0),
        (10.0, float("nan"), None),
    ],
)
def test_bad_options_are_rejected(max_secs, overlap, min_secs):
    with pytest.raises(InvalidOptionError):
        plan_chunks(np.zeros(100, np.float32), 16000, max_secs, overlap, min_secs)


def test_one_hour_is_planned_fast_in_bounded_memory():
    sr = 16000
    rng = np.random.default_rng(0)
    # 7 s of "speech" (noise bursts) and 0.5 s pauses, tiled to an hour: 230 MB of float32.
    period = np.concatenate([rng.standard_normal(7 * sr), np.zeros(sr // 2)]).astype(np.float32)
    audio = np.tile(period, 3600 * 2 // 15)
    assert audio.size == 3600 * sr
    t0 = time.perf_counter()
    chunks = plan_chunks(audio, sr, max_secs=25.0)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"planning an hour took {elapsed:.2f} s"
    check_tiling(chunks, audio.size)
    tracemalloc.start()
    try:
        plan_chunks(audio, sr, max_secs=25.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Only one search window's energies at a time (~12 s of float64 power), never the whole file.
    assert peak < 2 * 2**20, f"planning allocated {peak / 2**20:.1f} MiB"
