"""CTC greedy decoding over a batch, by the compiled `polyasr._decode` extension (the package's
only CTC collapse). Inputs are taken without copies when they are C-contiguous CPU arrays."""

from __future__ import annotations

import numpy as np

from polyasr import _decode

_ID_DTYPES = (np.int32, np.int64)


def ctc_greedy(x, lengths=None, blank: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Collapse repeats and drop blanks, per item.

    x: (B, T) int32/int64 label ids (the argmax already taken, e.g. on the device), or
       (B, T, V) float32 scores (the argmax is taken here); numpy or any CPU DLPack tensor.
    lengths: (B,) valid frames per item; None means all T frames.
    Returns, per item, (token ids int32 (N,), frame index of each token int32 (N,)).
    Raises ValueError for a wrong dtype or rank, negative lengths or lengths beyond T.
    """
    if hasattr(x, "__dlpack__") and not isinstance(x, np.ndarray):
        x = np.from_dlpack(x)
    x = np.asarray(x)
    if x.ndim == 2 and x.dtype not in _ID_DTYPES or x.ndim == 3 and x.dtype != np.float32 or x.ndim not in (2, 3):
        raise ValueError(
            f"ctc_greedy takes (B, T) int32/int64 ids or (B, T, V) float32 scores, got {x.ndim}-D {x.dtype}"
        )
    if lengths is None:
        lengths = np.full(x.shape[0], x.shape[1], dtype=np.int64)
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"lengths must be a 1-D integer array, got {lengths.ndim}-D {lengths.dtype}")
    tokens, frames, offsets = _decode.ctc_greedy(
        np.ascontiguousarray(x), np.ascontiguousarray(lengths, np.int64), int(blank)
    )
    return [(tokens[a:b], frames[a:b]) for a, b in zip(offsets[:-1], offsets[1:])]


def token_spans(labels: np.ndarray, frames: np.ndarray, posteriors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each emitted token fires, for word timestamps.

    labels: (T,) the per-frame argmax ids `ctc_greedy` collapsed; frames: (N,) the frame each
    token was emitted at (the first of its run); posteriors: (T,) each frame's max posterior.
    Returns (last frame of each token's run (N,) int64: its label repeated up to there, before
    a blank or another label; mean posterior over the run (N,) float64)."""
    labels, frames = np.asarray(labels), np.asarray(frames, dtype=np.int64)
    changes = np.append(np.flatnonzero(np.diff(labels)) + 1, len(labels))  # first frame of each run after the first
    ends = changes[np.searchsorted(changes, frames, side="right")] - 1
    sums = np.concatenate([[0.0], np.cumsum(np.asarray(posteriors, dtype=np.float64))])
    return ends, (sums[ends + 1] - sums[frames]) / (ends + 1 - frames)
