"""Long audio for full-attention models: split at pauses with overlap, decode per chunk, stitch.

Self-attention over the whole utterance (GigaAM, Parakeet) costs O(T^2) time and memory, so
audio longer than a model's limit is cut into chunks of at most `max_secs`, each decoded on its
own (in bounded batches), and the per-chunk emissions are joined back into one sequence.

Geometry, in samples (N = len(audio), O = overlap, cuts c_1 < ... < c_{K-1}, c_0 = 0, c_K = N):

    chunk i     = [c_i - O//2, c_{i+1} + (O - O//2))   clipped to [0, N) at the file ends
    kept region = [c_i, c_{i+1})

so the kept regions tile [0, N) exactly, consecutive chunks share O samples centred on their cut,
and each chunk is at most `max_secs` long overlap included. A cut is placed at the quietest
point of a search window near the end of the chunk (100 ms RMS on a 20 ms grid); if that window
has no pause (nothing `PAUSE_DB` below its loudest part) the chunk simply runs to its maximum
length. Energy is computed only inside search windows, so planning an hour of audio touches
well under half of it and allocates a few megabytes, never features for the whole file.

Stitching rule: an emission (token, time, ...) from chunk i is kept iff its time, rounded to the
nearest sample, lies in chunk i's kept region. Each emission of the overlap is produced by both
neighbours; exactly one of them keeps it, so nothing is duplicated, and since every sample lies
in some kept region nothing is lost. Edge case: an emission exactly on a cut belongs to the
later chunk (half-open regions). Rounding to samples makes both neighbours agree on the side
of an emission even when they computed its time with different float rounding. The first
chunk's region is open to the left and the last one's to the right, so a frame time a model
reports slightly before 0 or past the end of the file is kept rather than dropped.

Speech chunks (`plan_speech_chunks`, used when voice activity detection is on): the speech
regions decide the cuts instead. Consecutive regions are joined end to end, the silence between
them left out, into chunks of at most `max_secs` of speech (faster-whisper's `collect_chunks`),
so every cut lies in a pause between regions and audio outside the regions is never decoded. A
speech chunk's `spans` are its regions; `Chunk.samples` joins them and `Chunk.to_file` maps a
position in the joined signal back to the file's samples. Speech chunks do not overlap and their
kept region is the whole chunk, so the stitching rule keeps every emission of a speech chunk.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np

from polyasr.errors import InvalidOptionError

FRAME_SECS = 0.02  # energy grid
SMOOTH_FRAMES = 5  # 100 ms RMS windows: long enough to skip the dips inside a syllable
PAUSE_DB = 20.0  # a window this far below the loudest one in the search region counts as a pause
QUIET_DB = 3.0  # windows within this of the quietest one belong to the same pause
PAUSE_MARGIN_SECS = 0.2  # keep a cut this far from the end of the pause it is in (CTC peaks lag the sound)


class Chunk(NamedTuple):
    """One piece of the audio, in samples: decode [start, end), keep emissions in [keep_start, keep_end).

    spans: for a speech chunk, the [start, end) regions it is made of (disjoint, in order, from
    `start` to `end`); decoded joined end to end. Empty: the contiguous audio [start, end).
    """

    start: int
    end: int
    keep_start: int
    keep_end: int
    spans: tuple[tuple[int, int], ...] = ()

    def samples(self, audio: np.ndarray) -> np.ndarray:
        """What the model decodes: a view of audio[start:end], or the spans joined (a copy)."""
        if not self.spans:
            return audio[self.start : self.end]
        return np.concatenate([audio[a:b] for a, b in self.spans])

    def to_file(self, positions, *, end: bool = False) -> np.ndarray:
        """Sample positions in `samples(...)` (int array) -> positions in the file, clipped to the chunk.

        A position on a join between two spans is the first sample of the later span, or with
        `end` (an exclusive end: the sample before it was the last one) the end of the earlier one."""
        positions = np.asarray(positions, dtype=np.int64)
        if not self.spans:
            return self.start + np.clip(positions, 0, self.end - self.start)
        starts = np.array([a for a, _ in self.spans], dtype=np.int64)
        lengths = np.array([b - a for a, b in self.spans], dtype=np.int64)
        joined_end = np.cumsum(lengths)
        positions = np.clip(positions, 0, joined_end[-1])
        span = np.searchsorted(joined_end, positions, side="left" if end else "right")
        span = np.minimum(span, len(self.spans) - 1)
        return starts[span] + positions - (joined_end[span] - lengths[span])


def plan_chunks(
    audio: np.ndarray,
    sample_rate: int,
    max_secs: float,
    overlap_secs: float = 1.0,
    min_secs: float | None = None,
) -> list[Chunk]:
    """Split (N,) mono `audio` into overlapping chunks cut at low-energy points.

    max_secs: longest chunk, overlap included.
    overlap_secs: samples shared by consecutive chunks, centred on the cut between them.
    min_secs: shortest chunk before a cut may be placed (overlap included); the cut is searched
      where the chunk would be between `min_secs` and `max_secs` long. None: midway between
      `overlap_secs` and `max_secs`. Must exceed `overlap_secs`, which guarantees progress.
    Returns the chunks in order; audio of at most `max_secs` (or empty) is one chunk.
    Deterministic; reads only the search windows of `audio`.
    """
    n = int(audio.shape[0])
    max_len, overlap, min_len = _lengths(sample_rate, max_secs, overlap_secs, min_secs)
    left = overlap // 2
    right = overlap - left
    chunks: list[Chunk] = []
    start = keep_start = 0
    while n - start > max_len:
        # The chunk ends at cut + right, so the cut may lie anywhere in [lo, hi].
        lo, hi = start + min_len - right, start + max_len - right
        cut = _quietest_cut(audio, sample_rate, lo, hi)
        chunks.append(Chunk(start, cut + right, keep_start, cut))
        start, keep_start = cut - left, cut
    chunks.append(Chunk(start, n, keep_start, n))
    return chunks


def plan_speech_chunks(regions, n_samples: int, sample_rate: int, max_secs: float) -> list[Chunk]:
    """Speech regions ([start, end) samples, in order, disjoint) of an `n_samples` signal -> speech
    chunks of at most `max_secs` of speech each (see the module docstring).

    Regions are taken in order into the current chunk while its speech fits; a region that does
    not fit starts the next chunk, so cuts lie in the silence between regions. Regions that touch
    become one span. A region longer than `max_secs` on its own (the VAD cuts regions at its
    `max_speech_duration_s`, which callers set to at most `max_secs`, so only hand-made regions
    are) is cut into `max_secs` pieces. No regions: no chunks, nothing is decoded.
    """
    max_len, _, _ = _lengths(sample_rate, max_secs, 0.0, None)
    chunks: list[Chunk] = []
    spans: list[tuple[int, int]] = []
    size = 0
    for region_start, region_end in regions:
        region_start, region_end = max(int(region_start), 0), min(int(region_end), n_samples)
        if spans and region_start < spans[-1][1]:
            raise InvalidOptionError(
                f"speech regions must be disjoint and in order, got {region_start} after {spans[-1]}"
            )
        for a in range(region_start, region_end, max_len):
            b = min(a + max_len, region_end)
            if size + b - a > max_len:
                chunks.append(_speech_chunk(spans))
                spans, size = [], 0
            if spans and spans[-1][1] == a:
                spans[-1] = (spans[-1][0], b)
            else:
                spans.append((a, b))
            size += b - a
    if spans:
        chunks.append(_speech_chunk(spans))
    return chunks


def _speech_chunk(spans: list[tuple[int, int]]) -> Chunk:
    start, end = spans[0][0], spans[-1][1]
    return Chunk(start, end, start, end, tuple(spans))


def _lengths(sample_rate: int, max_secs: float, overlap_secs: float, min_secs: float | None) -> tuple[int, int, int]:
    """Validate the options -> (max, overlap, min) lengths in samples."""
    if sample_rate <= 0:
        raise InvalidOptionError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    if not overlap_secs >= 0:
        raise InvalidOptionError(f"chunk overlap must be >= 0 seconds, got {overlap_secs}")
    max_len = math.floor(max_secs * sample_rate) if math.isfinite(max_secs) else 0
    overlap = round(overlap_secs * sample_rate)
    if max_len <= overlap:
        raise InvalidOptionError(
            f"chunk length ({max_secs} s) must be a finite number of seconds longer than the overlap ({overlap_secs} s)"
        )
    if min_secs is None:
        min_len = overlap + (max_len - overlap + 1) // 2
    else:
        if not overlap_secs < min_secs <= max_secs:
            raise InvalidOptionError(
                f"minimum chunk length ({min_secs} s) must be longer than the overlap ({overlap_secs} s) "
                f"and at most the maximum chunk length ({max_secs} s)"
            )
        # Rounding to samples must not undo the check above.
        min_len = min(max(math.ceil(min_secs * sample_rate), overlap + 1), max_len)
    return max_len, overlap, min_len


def _quietest_cut(audio: np.ndarray, sample_rate: int, lo: int, hi: int) -> int:
    """A sample in [lo, hi] inside the quietest stretch of audio, or hi if the stretch has no pause.

    Windows lie on a global 20 ms grid (so the answer does not depend on where the chunk began)
    and may reach half a window beyond [lo, hi]. The pause is the longest run of windows within
    QUIET_DB of the quietest one (a real pause rather than a dip), the later one on ties. The cut
    is at the centre of the samples it covers, or later, up to PAUSE_MARGIN_SECS before its end:
    in a long silence later cuts mean longer chunks and fewer of them.
    """
    frame = max(1, round(FRAME_SECS * sample_rate))
    half = SMOOTH_FRAMES * frame // 2
    k0 = -(-max(0, lo - half) // frame)
    k1 = min(audio.shape[0], hi + half) // frame
    if k1 - k0 < SMOOTH_FRAMES:
        return hi
    seg = audio[k0 * frame : k1 * frame].reshape(k1 - k0, frame)
    power = np.einsum("ij,ij->i", seg, seg, dtype=np.float64) / frame
    # A direct sum (not a cumsum difference) keeps digital silence exactly zero.
    energy = np.convolve(power, np.ones(SMOOTH_FRAMES), mode="valid") / SMOOTH_FRAMES
    low, loud = energy.min(), energy.max()
    if low > loud * 10.0 ** (-PAUSE_DB / 10.0):
        return hi
    a, b = _longest_run(energy <= low * 10.0 ** (QUIET_DB / 10.0))
    first, stop = (k0 + a) * frame, (k0 + b + SMOOTH_FRAMES) * frame
    cut = max((first + stop) // 2, stop - round(PAUSE_MARGIN_SECS * sample_rate))
    return min(max(cut, lo), hi)


def _longest_run(mask: np.ndarray) -> tuple[int, int]:
    """(first, last) index of the longest run of True in a non-empty-True 1-D mask; the later on ties."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    lengths = ends - starts
    best = len(lengths) - 1 - int(np.argmax(lengths[::-1]))
    return int(starts[best]), int(ends[best]) - 1


def iter_chunk_batches(
    audio: np.ndarray, chunks: Iterable[Chunk], batch_size: int
) -> Iterator[list[tuple[Chunk, np.ndarray]]]:
    """Yield lists of at most `batch_size` (chunk, audio[chunk.start:chunk.end]) pairs, in order.

    The samples are views, not copies (a speech chunk's joined spans are a copy of at most one chunk):
    a caller that computes features per batch holds at most `batch_size` chunks' features at a
    time, whatever the length of the file.
    """
    if batch_size < 1:
        raise InvalidOptionError(f"batch size must be >= 1, got {batch_size}")
    batch: list[tuple[Chunk, np.ndarray]] = []
    for chunk in chunks:
        batch.append((chunk, chunk.samples(audio)))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def in_kept_region(samples: np.ndarray, chunk: Chunk, *, first: bool, last: bool) -> np.ndarray:
    """Which sample positions (int array) lie in `chunk`'s kept region [keep_start, keep_end), as a
    bool mask of the same shape; `first` / `last` open the region to the left / right."""
    samples = np.asarray(samples)
    keep = np.ones(samples.shape, dtype=bool)
    if not first:
        keep &= samples >= chunk.keep_start
    if not last:
        keep &= samples < chunk.keep_end
    return keep


def keep_emissions(
    emissions: Iterable[tuple], chunk: Chunk, sample_rate: int, *, first: bool, last: bool
) -> list[tuple]:
    """The emissions (token, time_secs, *payload) of one chunk whose time lies in its kept region.

    Times are rounded to the nearest sample before the half-open test (`in_kept_region`); order
    and payloads are preserved.
    """
    emissions = list(emissions)
    samples = np.array([round(e[1] * sample_rate) for e in emissions], dtype=np.int64)
    return [e for e, keep in zip(emissions, in_kept_region(samples, chunk, first=first, last=last)) if keep]
