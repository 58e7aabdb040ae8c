"""Kaldi's log mel filter bank (`compute-fbank-feats`, as `torchaudio.compliance.kaldi.fbank` computes
it) with the settings `WeSpeakerConfig` documents, on the host in numpy (float64, handed out as
float32).

    x = wav * 2^15; frames f_t = x[t hop : t hop + win]   (t < 1 + (N - win) // hop)
    f_t -= mean(f_t); f_t[j] -= 0.97 f_t[j - 1] (f_t[-1] = f_t[0]); f_t *= window
    fbank[t] = ln(max(bank @ |rfft(f_t, n_fft)|^2, eps))                         (T, num_mel_bins)

The frames are computed a block at a time so a long region never holds its whole (T, n_fft)
spectrum.
"""

from __future__ import annotations

import functools

import numpy as np

from polyasr.models.wespeaker_resnet.config import WeSpeakerConfig

FLOAT32_EPS = float(np.finfo(np.float32).eps)  # Kaldi's floor: std::numeric_limits<float>::epsilon()
_BLOCK = 4096  # frames per FFT block


def kaldi_hz_to_mel(hz):
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


@functools.lru_cache(maxsize=4)
def mel_bank(cfg: WeSpeakerConfig) -> np.ndarray:
    """Kaldi's triangular filters (num_mel_bins, n_fft // 2 + 1): equally spaced on the mel scale from
    low_freq to high_freq, each rising and falling linearly *in mel* between its neighbours'
    centres; the Nyquist bin weighs 0 (Kaldi builds n_fft / 2 bins). Computed in float32 as Kaldi
    (BaseFloat) and torchaudio compute it: the bins' mel values lose ~1e-5 relative there, which
    moves a quiet frame's lowest filters by ~1e-4 in the log against a float64 bank."""
    f32 = np.float32
    nyquist = cfg.sample_rate / 2
    high = cfg.high_freq if cfg.high_freq > 0 else nyquist + cfg.high_freq
    lo, hi = (float(m) for m in kaldi_hz_to_mel([cfg.low_freq, high]))
    step = (hi - lo) / (cfg.num_mel_bins + 1)
    index = np.arange(cfg.num_mel_bins, dtype=f32)[:, None]
    left, centre, right = (f32(lo) + (index + f32(k)) * f32(step) for k in range(3))
    hz = np.arange(cfg.n_fft // 2, dtype=f32) * f32(cfg.sample_rate / cfg.n_fft)
    mel = kaldi_hz_to_mel(hz).astype(f32)[None, :]
    bank = np.maximum(f32(0.0), np.minimum((mel - left) / (centre - left), (right - mel) / (right - centre)))
    return np.pad(bank, ((0, 0), (0, 1))).astype(np.float64)


@functools.lru_cache(maxsize=4)
def window(cfg: WeSpeakerConfig) -> np.ndarray:
    """The analysis window, symmetric (divided by win - 1), (win_length,) float64."""
    n = cfg.win_length
    cos = np.cos(2 * np.pi * np.arange(n, dtype=np.float64) / (n - 1))
    if cfg.window_type == "hamming":
        return 0.54 - 0.46 * cos
    if cfg.window_type == "rectangular":
        return np.ones(n)
    hann = 0.5 - 0.5 * cos
    return hann**0.85 if cfg.window_type == "povey" else hann


def frame_count(n_samples: int, cfg: WeSpeakerConfig) -> int:
    """Frames that fit in n_samples (Kaldi's snip_edges)."""
    return 0 if n_samples < cfg.win_length else 1 + (n_samples - cfg.win_length) // cfg.hop


def fbank(wav: np.ndarray, cfg: WeSpeakerConfig) -> np.ndarray:
    """wav (N,) float samples in [-1, 1] -> log mel filter bank (frame_count(N), num_mel_bins) float32,
    not mean-normalised (a window's frames are normalised on their own by `normalize`)."""
    x = np.asarray(wav, dtype=np.float64) * 32768.0
    t = frame_count(len(x), cfg)
    out = np.empty((t, cfg.num_mel_bins), dtype=np.float32)
    if t == 0:
        return out
    frames = np.lib.stride_tricks.sliding_window_view(x, cfg.win_length)[:: cfg.hop][:t]
    bank_t, win, pre = mel_bank(cfg).T, window(cfg), cfg.preemphasis_coefficient
    for first in range(0, t, _BLOCK):
        f = frames[first : first + _BLOCK]
        f = f - f.mean(axis=1, keepdims=True)
        f = f - pre * np.concatenate([f[:, :1], f[:, :-1]], axis=1)
        power = np.square(np.abs(np.fft.rfft(f * win, n=cfg.n_fft)))
        out[first : first + len(f)] = np.log(np.maximum(power @ bank_t, FLOAT32_EPS))
    return out


def normalize(frames: np.ndarray) -> np.ndarray:
    """Cepstral mean normalisation of one window: its (T, num_mel_bins) frames minus their mean."""
    return frames - frames.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
