"""Whisper log-mel frontend (128 bins) on CPU: polyasr's fp32 reference against openai-whisper's
``log_mel_spectrogram`` and transformers' ``WhisperFeatureExtractor.__call__`` on the same audio.

    .venv/bin/python -m pytest bench/bench_mel.py --benchmark-only

Each duration runs the peers first and polyasr last, then prints one line with the min and
median of each, and the ratios of the minima measured in this run (peer time / polyasr
time: > 1 means polyasr is faster). On a shared machine, compare minima; OMP_NUM_THREADS=1
gives the steadiest numbers.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

SR = 16000
N_MELS = 128
ROUNDS = {30: 20, 600: 5}
CASES = [(seconds, impl) for seconds in ROUNDS for impl in ("openai-whisper", "transformers", "polyasr")]
_TIMES: dict[tuple[int, str], tuple[float, float]] = {}  # (min, median) seconds


@functools.cache
def _audio(seconds: int) -> np.ndarray:
    """(seconds * SR,) float32: noise bursts over a few tones, deterministic."""
    rng = np.random.default_rng(seconds)
    t = np.arange(seconds * SR) / SR
    tones = sum(0.05 * np.sin(2 * np.pi * f * t) for f in (220.0, 1375.0, 4100.0))
    return (tones + 0.1 * rng.standard_normal(t.size) * (np.sin(2 * np.pi * 0.3 * t) > 0)).astype(np.float32)


def _target(impl: str, audio: np.ndarray):
    """A no-argument callable computing (.., 128, T) log-mel features with ``impl``."""
    if impl == "openai-whisper":
        whisper_audio = pytest.importorskip("whisper.audio")
        x = torch.from_numpy(audio)
        return lambda: whisper_audio.log_mel_spectrogram(x, N_MELS)
    if impl == "transformers":
        transformers = pytest.importorskip("transformers")
        fe = transformers.WhisperFeatureExtractor(feature_size=N_MELS)
        # No 30 s padding or truncation, so every implementation sees the same samples.
        return lambda: fe(audio, sampling_rate=SR, padding="longest", truncation=False, return_tensors="np")
    from polyasr.kernels.mel import MelConfig, log_mel_ref

    cfg, x = MelConfig.whisper(N_MELS), torch.from_numpy(audio)
    return lambda: log_mel_ref(x, cfg)


def _ratio_line(seconds: int) -> str:
    """Min and median per implementation, ratios by min (the least disturbed by other processes)."""
    ours = _TIMES[(seconds, "polyasr")]
    parts = [f"polyasr {ours[0] * 1e3:.1f} / {ours[1] * 1e3:.1f} ms"]
    for (secs, impl), (best, median) in _TIMES.items():
        if secs == seconds and impl != "polyasr":
            parts.append(f"{impl} {best * 1e3:.1f} / {median * 1e3:.1f} ms ({best / ours[0]:.2f}x)")
    threads = torch.get_num_threads()
    return f"log-mel {N_MELS} bins, {seconds} s audio, {threads} threads, min / median: " + "; ".join(parts)


@pytest.mark.parametrize("seconds,impl", CASES, ids=[f"{s}s-{i}" for s, i in CASES])
def test_whisper_log_mel(benchmark, capsys, seconds, impl):
    target = _target(impl, _audio(seconds))
    benchmark.group = f"log-mel {N_MELS} bins, {seconds} s"
    benchmark.extra_info["audio_seconds"] = seconds
    benchmark.pedantic(target, rounds=ROUNDS[seconds], warmup_rounds=1)
    if benchmark.stats is None:  # --benchmark-disable: nothing measured
        return
    _TIMES[(seconds, impl)] = (benchmark.stats.stats.min, benchmark.stats.stats.median)
    if impl == "polyasr":
        with capsys.disabled():
            print("\n" + _ratio_line(seconds))
