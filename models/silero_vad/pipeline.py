"""Audio -> per-window speech probabilities -> speech regions.

`SileroVAD.probabilities` runs several 16 kHz signals as the rows of one batch, a block of windows
at a time (the conv stages on the whole block at once, the LSTM through it with the state carried
to the next block), so memory stays bounded on hours of audio. `speech_regions` turns one
signal's probabilities into regions by the rules of silero's `get_speech_timestamps` (silero-vad
6.2), reproduced decision for decision so the same probabilities give the same samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from polyasr.models.silero_vad import model
from polyasr.models.silero_vad.config import SileroVADConfig
from polyasr.models.silero_vad.weights import find_weights, load_weights

# Windows in a block (rows x windows per row): a block's windows and STFT (~5 MB) stay in the CPU's
# caches through the conv stages, and memory stays bounded on any length.
_BLOCK_WINDOWS = 1024


class SileroVAD:
    """The loaded network on one backend."""

    def __init__(self, params: dict, cfg: SileroVADConfig, backend):
        self.cfg, self.backend = cfg, backend
        self.params = model.prepare(params, cfg, backend)

    @classmethod
    def load(cls, backend, path: str | os.PathLike | None = None, weights: str = "jit") -> SileroVAD:
        """From the installed silero-vad package's file of format `weights` ("jit" | "safetensors"; see
        `weights.py`), or from `path`, onto `backend`."""
        cfg, params = load_weights(find_weights(path, weights))
        return cls(params, cfg, backend)

    def n_windows(self, n_samples: int) -> int:
        return -(-n_samples // self.cfg.num_samples)

    def probabilities(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        """16 kHz mono float32 signals -> P(speech) of each one's 512-sample windows, (ceil(N / 512),)
        float32 each (the last window zero-padded), every signal as if it ran alone."""
        B, cfg = self.backend, self.cfg
        counts = [self.n_windows(len(a)) for a in audios]
        total = max(counts, default=0)
        out = np.zeros((len(audios), total), dtype=np.float32)
        block = max(64, _BLOCK_WINDOWS // max(len(audios), 1))
        state = None
        with B.no_grad():
            for first in range(0, total, block):
                count = min(block, total - first)
                windows = model.window_block(audios, cfg, first, count)
                feats = model.encode(self.params, cfg, B, B.asarray(windows.reshape(-1, windows.shape[-1])))
                probs, state = model.decode(self.params, cfg, B, feats.reshape(len(audios), count, -1), state)
                out[:, first : first + count] = B.to_numpy(probs)
        return [row[:n] for row, n in zip(out, counts)]


@dataclass(frozen=True)
class RegionRules:
    """`get_speech_timestamps`'s parameters in samples (floats, computed as silero computes them)."""

    threshold: float
    neg_threshold: float
    min_speech: float
    min_silence: float
    speech_pad: float
    max_speech: float
    min_silence_at_max_speech: float
    use_max_poss_sil_at_max_speech: bool

    @classmethod
    def from_options(cls, opts, cfg: SileroVADConfig) -> RegionRules:
        """opts: a `polyasr.vad.VadOptions` (durations in ms / s, as silero takes them)."""
        sr = cfg.sample_rate
        pad = sr * opts.speech_pad_ms / 1000
        neg = opts.neg_threshold
        return cls(
            threshold=opts.threshold,
            neg_threshold=max(opts.threshold - 0.15, 0.01) if neg is None else neg,
            min_speech=sr * opts.min_speech_duration_ms / 1000,
            min_silence=sr * opts.min_silence_duration_ms / 1000,
            speech_pad=pad,
            # the cut is decided a window late, and the padding grows the region on both sides
            max_speech=sr * opts.max_speech_duration_s - cfg.num_samples - 2 * pad,
            min_silence_at_max_speech=sr * opts.min_silence_at_max_speech / 1000,
            use_max_poss_sil_at_max_speech=opts.use_max_poss_sil_at_max_speech,
        )


def speech_regions(probs: np.ndarray, n_samples: int, rules: RegionRules, window: int) -> list[tuple[int, int]]:
    """One signal's window probabilities (window w starts at sample w * `window`) and its length ->
    [start, end) sample regions of speech, padded; silero's `get_speech_timestamps_from_probs`."""
    return _pad(_detect(probs, n_samples, rules, window), n_samples, rules.speech_pad)


def _detect(probs, n_samples: int, r: RegionRules, window: int) -> list[tuple[int, int]]:
    """Unpadded regions. A region opens at the first window >= threshold and closes where the
    probability first fell below neg_threshold, once it has stayed below threshold for min_silence;
    one longer than max_speech is cut at its longest inner pause (or, with
    use_max_poss_sil_at_max_speech off, at its last pause longer than min_silence_at_max_speech),
    else right there."""
    regions: list[tuple[int, int]] = []
    start = None  # the open region's first sample; None outside speech
    temp_end = 0  # where the current dip below neg_threshold began (0: none; sample 0 never is one)
    prev_end = next_start = 0  # the last long pause and where speech resumed after it (legacy cut)
    pauses: list[tuple[int, int]] = []  # (start, length) of the open region's pauses
    for i, p in enumerate(np.asarray(probs, dtype=np.float64).tolist()):
        t = i * window
        if p >= r.threshold and temp_end:
            if t - temp_end > r.min_silence_at_max_speech:
                pauses.append((temp_end, t - temp_end))
            temp_end = 0
            if next_start < prev_end:
                next_start = t
        if p >= r.threshold and start is None:
            start = t
            continue
        if start is not None and t - start > r.max_speech:
            if r.use_max_poss_sil_at_max_speech and pauses:
                end, length = max(pauses, key=lambda pause: pause[1])  # the first of the longest
                regions.append((start, end))
                start = end + length  # where speech resumed after it: always before t, so speech goes on
            elif prev_end:
                regions.append((start, prev_end))
                start = None if next_start < prev_end else next_start
            else:
                regions.append((start, t))
                start = None
            prev_end = next_start = temp_end = 0
            pauses = []
            if start is None:
                continue
        if p < r.neg_threshold and start is not None:
            temp_end = temp_end or t
            silence = t - temp_end
            if not r.use_max_poss_sil_at_max_speech and silence > r.min_silence_at_max_speech:
                prev_end = temp_end
            if silence < r.min_silence:
                continue
            if temp_end - start > r.min_speech:
                regions.append((start, temp_end))
            start = None
            prev_end = next_start = temp_end = 0
            pauses = []
    if start is not None and n_samples - start > r.min_speech:
        regions.append((start, n_samples))
    return regions


def _pad(regions: list[tuple[int, int]], n_samples: int, pad: float) -> list[tuple[int, int]]:
    """Grow each region by `pad` on both sides within the signal; two regions closer than 2 * pad
    meet halfway between them instead."""
    out = [list(r) for r in regions]
    for i, region in enumerate(out):
        if i == 0:
            region[0] = int(max(0, region[0] - pad))
        if i + 1 < len(out):
            following = out[i + 1]
            gap = following[0] - region[1]
            if gap < 2 * pad:
                region[1] += int(gap // 2)
                following[0] = int(max(0, following[0] - gap // 2))
            else:
                region[1] = int(min(n_samples, region[1] + pad))
                following[0] = int(max(0, following[0] - pad))
        else:
            region[1] = int(min(n_samples, region[1] + pad))
    return [(s, e) for s, e in out]
