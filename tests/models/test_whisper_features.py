"""Whisper's windowed features: identical to the reference's whole-file log-mel at any seek, and
bounded in memory (no request for more than one window or one scan chunk, even for an hour)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_close, log_mel_tolerance

from polyasr.backends.torch import TorchBackend
from polyasr.kernels.mel_tables import MelConfig
from polyasr.models.whisper import features as feat
from polyasr.models.whisper.features import WhisperFeatures

whisper = pytest.importorskip("whisper")


def _speechy(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    envelope = (np.sin(2 * np.pi * 0.3 * t) > 0).astype(np.float32)  # bursts and gaps
    tone = np.sin(2 * np.pi * (200 + 150 * np.sin(2 * np.pi * 0.05 * t)) * t)
    return ((0.3 * tone + 0.05 * rng.standard_normal(t.size)) * envelope).astype(np.float32)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_windows_equal_the_whole_file_reference(n_mels):
    audio = _speechy(95.3)
    ref = whisper.log_mel_spectrogram(torch.from_numpy(audio), n_mels, padding=480000)
    content = ref.shape[-1] - 3000
    f = WhisperFeatures(audio, n_mels, 3000, TorchBackend("cpu", "float32"))
    assert f.content_frames == content
    tol = _tolerance(audio, n_mels)
    for seek in (0, 1234, 6000, content - 700):
        size = min(3000, content - seek)
        expected = whisper.pad_or_trim(ref[:, seek : seek + size], 3000)
        window_tol = np.pad(tol[:, seek : seek + size], ((0, 0), (0, 3000 - size)))
        assert_close(f.window(seek, size)[0], expected, window_tol, what=f"window at {seek}")
    # language detection reads the padded spectrogram itself, not zeros, past a short file's end
    short = _speechy(7.0)
    ref = whisper.log_mel_spectrogram(torch.from_numpy(short), n_mels, padding=480000)
    g = WhisperFeatures(short, n_mels, 3000, TorchBackend("cpu", "float32"))
    tol = _tolerance(short, n_mels)[:, :3000]
    assert_close(g.window(0, g.content_frames, zero_pad=False)[0], ref[:, :3000], tol, what="detection window")


def _tolerance(audio, n_mels):
    """Per-element tolerance of the whole-file reference: the audio and Whisper's 30 s of zeros."""
    return log_mel_tolerance(np.pad(audio, (0, 480000)), MelConfig.whisper(n_mels))[0]


def test_an_hour_is_never_held_whole(monkeypatch):
    B = TorchBackend("cpu", "float32")
    requested = []
    real = B.mel_power

    def spy(samples, cfg):
        requested.append(len(samples))
        return real(samples, cfg)

    monkeypatch.setattr(B, "mel_power", spy)
    audio = np.zeros(3600 * 16000, dtype=np.float32)
    audio[::997] = 0.1  # not silent, so the maximum is real
    f = WhisperFeatures(audio, 80, 3000, B)
    f.window(f.content_frames - 2000, 2000)
    limit = (max(feat._SCAN_FRAMES, 3000) - 1) * 160 + 400
    assert max(requested) <= limit and len(requested) >= 3600 * 100 // feat._SCAN_FRAMES
