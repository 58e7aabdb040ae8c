"""The Silero VAD network as functions of `(params, cfg, B)`, B a backend (`polyasr.backends`).

Per 512-sample window w of a signal x (zeros before it and after its end):
  seg = x[w*512 - 64 : w*512 + 512] (576 samples) ++ reflect(its last 64)  -> 640 samples
  |STFT| = sqrt(re^2 + im^2) of conv1d(seg, basis, stride 128)             -> (4 frames, 129)
              (the basis is a Hann-windowed DFT: computed as |rfft(frame * window)|)
  conv k3 p1 s1 / s2 / s2 / s1, each + ReLU                                -> (1 frame, 128)
  LSTM cell (h, c carried from window w-1)                                 -> h (128,)
  sigmoid(final_conv(relu(h)))                                             -> P(speech in window w)
The stored basis is checked at load to be the DFT (cos rows, then -sin rows) times a window, which
is its first row; an FFT then does the conv's work in a small fraction of its multiplications.
Everything up to the LSTM depends on one window only, so it runs for many windows at once (the
windows are the conv batch); only the LSTM steps one window after another, on a (B, T, C) batch
whose rows are independent streams.
"""

from __future__ import annotations

import numpy as np

from polyasr.errors import WeightsMismatchError
from polyasr.models.silero_vad.config import SileroVADConfig

# fp32 storage of cos / sin values times a window <= 1: each entry within a few ulps of 1
_BASIS_ATOL = 1e-6


def prepare(params: dict[str, np.ndarray], cfg: SileroVADConfig, B) -> dict:
    """Host fp32 parameters -> backend arrays in the layouts the functions below read."""
    p = {name: B.param(a) for name, a in params.items() if name not in ("stft_conv.weight", "final_conv.weight")}
    p["stft.window"] = B.param(stft_window(params["stft_conv.weight"], cfg))
    p["final.w"] = B.prepare_linear(B.param(params["final_conv.weight"][:, :, 0]))
    return p


def stft_window(basis: np.ndarray, cfg: SileroVADConfig) -> np.ndarray:
    """The analysis window of the STFT conv's basis (2F, 1, n_fft), after checking that the basis is
    the windowed DFT; its first row (cos at frequency 0) is the window itself."""
    n = cfg.filter_length
    window = basis[0, 0].astype(np.float64)
    angle = 2 * np.pi * np.outer(np.arange(cfg.n_freqs), np.arange(n)) / n
    expected = np.concatenate([np.cos(angle), -np.sin(angle)]) * window
    err = np.abs(basis[:, 0].astype(np.float64) - expected).max()
    if err > _BASIS_ATOL:
        raise WeightsMismatchError(
            f"stft_conv.weight is not a windowed DFT basis (off by up to {err:.3g}); not a Silero VAD checkpoint"
        )
    return window.astype(np.float32)


def window_block(audios: list[np.ndarray], cfg: SileroVADConfig, first: int, count: int) -> np.ndarray:
    """Windows first .. first+count-1 of each signal as the STFT reads them: (len(audios), count, 640)
    float32 host, each the window's context and samples (zeros outside the signal) plus the right
    reflection padding."""
    n, ctx, pad = cfg.num_samples, cfg.context_size_samples, cfg.reflect_pad
    span = ctx + n
    out = np.zeros((len(audios), count, span + pad), dtype=np.float32)
    lo = first * n - ctx  # the signal sample the block's first segment starts at
    for b, audio in enumerate(audios):
        seg = np.zeros(count * n + ctx, dtype=np.float32)
        src = audio[max(lo, 0) : lo + seg.shape[0]]
        seg[max(-lo, 0) : max(-lo, 0) + src.shape[0]] = src
        windows = np.lib.stride_tricks.sliding_window_view(seg, span)[::n]
        out[b, :, :span] = windows
        out[b, :, span:] = windows[:, span - 2 : span - 2 - pad : -1]  # reflect: excludes the edge sample
    return out


def encode(p: dict, cfg: SileroVADConfig, B, windows) -> object:
    """windows (N, 640) backend array -> (N, hidden) encoder features, one row per window."""
    x = B.stft_magnitude(windows, p["stft.window"], cfg.hop_length)  # (N, 4, F)
    pad = cfg.kernel_size // 2
    for i, stride in enumerate(cfg.encoder_strides, start=1):
        x = B.relu(B.conv1d(x, p[f"conv{i}.weight"], p[f"conv{i}.bias"], stride=stride, padding=pad))
    return x.reshape(x.shape[0], x.shape[-1])  # the strides leave one frame per window


def decode(p: dict, cfg: SileroVADConfig, B, feats, state=None):
    """feats (B, T, hidden) for T consecutive windows of B streams, state (h, c) from the window before
    (None: the start of the streams) -> (speech probabilities (B, T), state after window T)."""
    h, state = B.lstm(
        feats,
        p["lstm_cell.weight_ih"],
        p["lstm_cell.weight_hh"],
        p["lstm_cell.bias_ih"],
        p["lstm_cell.bias_hh"],
        state,
    )
    logits = B.linear(B.relu(h), p["final.w"], p["final_conv.bias"])  # (B, T, 1)
    return B.sigmoid(logits).reshape(logits.shape[0], logits.shape[1]), state
