"""The log-mel frontend's definition, in numpy: `MelConfig`, its analysis window, its mel filter bank
and its frame counts.

Every implementation of the frontend (the torch reference `kernels.mel`, the Triton kernel
`kernels.mel_kernel`, the MLX backend) builds its tables here, so they agree by construction and
the MLX path needs no torch. Tables are computed in float64 and handed out as float32.

The window has ``win_length`` taps and is zero-padded, centred, to ``n_fft`` (as ``torch.stft``
does). The filter bank is triangular on the slaney or htk mel scale, with slaney area
normalisation ``2 / (f_right - f_left)`` or none (Slaney's Auditory Toolbox; Young et al., The
HTK Book). The formulas of the whole frontend are in `kernels/mel.py`'s docstring.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

_MEL_SCALES = ("slaney", "htk")
_MEL_NORMS = ("slaney", None)
_LOGS = ("log10_whisper", "ln")
_GUARD_TYPES = ("clamp", "add")
_NORMALIZE = (None, "per_feature")
_PAD_MODES = ("reflect", "constant")
# Generalised cosine windows a0 - a1 cos(2 pi n / N) + a2 cos(4 pi n / N), N = taps (periodic) or
# taps - 1 (symmetric): the coefficients torch.{hann,hamming,blackman}_window use.
_COSINE_WINDOWS = {"hann": (0.5, 0.5, 0.0), "hamming": (0.54, 0.46, 0.0), "blackman": (0.42, 0.5, 0.08)}
WINDOWS = (*_COSINE_WINDOWS, "bartlett")

# Slaney's mel scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic above it,
# 27 mels per factor 6.4 in frequency.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = math.log(6.4) / 27.0

NORM_STD_EPS = 1e-5  # added to the per-feature std (NeMo's CONSTANT)


@dataclass(frozen=True)
class MelConfig:
    """Every knob of the frontend; the defaults are Whisper's except ``drop_last_frame``."""

    sample_rate: int = 16000
    n_fft: int = 400
    win_length: int = 400  # window zero-padded (centred) to n_fft when shorter
    hop_length: int = 160
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None  # None -> sample_rate / 2
    mel_scale: str = "slaney"  # "slaney" | "htk"
    mel_norm: str | None = "slaney"  # "slaney" (area norm) | None
    window: str = "hann"
    periodic_window: bool = True  # torch.hann_window default; NeMo uses symmetric (False)
    power: float = 2.0
    center: bool = True
    pad_mode: str = "reflect"  # "reflect" | "constant"
    preemphasis: float | None = None
    log: str = "log10_whisper"  # "log10_whisper" | "ln"
    log_guard: float = 1e-10  # whisper: clamp min; ln: clamp min or added, see log_guard_type
    log_guard_type: str = "clamp"  # "clamp" | "add"
    log_clamp_max: float | None = None  # GigaAM clamps to [1e-9, 1e9]
    normalize: str | None = None  # None | "per_feature"
    drop_last_frame: bool = False  # whisper drops the final STFT frame

    def __post_init__(self):
        _check_choice("mel_scale", self.mel_scale, _MEL_SCALES)
        _check_choice("mel_norm", self.mel_norm, _MEL_NORMS)
        _check_choice("log", self.log, _LOGS)
        _check_choice("log_guard_type", self.log_guard_type, _GUARD_TYPES)
        _check_choice("normalize", self.normalize, _NORMALIZE)
        _check_choice("pad_mode", self.pad_mode, _PAD_MODES)
        _check_choice("window", self.window, WINDOWS)
        if not 0 < self.win_length <= self.n_fft:
            raise ValueError(f"MelConfig: win_length {self.win_length} must be in 1..n_fft ({self.n_fft})")
        if self.hop_length <= 0 or self.n_mels <= 0:
            raise ValueError(f"MelConfig: hop_length {self.hop_length} and n_mels {self.n_mels} must be positive")

    @classmethod
    def whisper(cls, n_mels: int = 80) -> MelConfig:
        """Whisper's frontend (80 bins before large-v3, 128 from it; Qwen3-ASR uses 128)."""
        return cls(n_mels=n_mels, drop_last_frame=True)


def _check_choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"MelConfig: {name}={value!r}, expected one of {choices}")


def hz_to_mel(hz, scale: str = "slaney") -> np.ndarray:
    """Frequency in Hz -> mel, elementwise, float64."""
    hz = np.asarray(hz, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    log = _SLANEY_BREAK_MEL + np.log(np.maximum(hz, _SLANEY_BREAK_HZ) / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP
    return np.where(hz >= _SLANEY_BREAK_HZ, log, hz / _SLANEY_HZ_PER_MEL)


def mel_to_hz(mel, scale: str = "slaney") -> np.ndarray:
    """Mel -> frequency in Hz, elementwise, float64; inverse of ``hz_to_mel``."""
    mel = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    log = _SLANEY_BREAK_HZ * np.exp(_SLANEY_LOG_STEP * (np.maximum(mel, _SLANEY_BREAK_MEL) - _SLANEY_BREAK_MEL))
    return np.where(mel >= _SLANEY_BREAK_MEL, log, mel * _SLANEY_HZ_PER_MEL)


def filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    mel_scale: str = "slaney",
    norm: str | None = "slaney",
) -> np.ndarray:
    """Triangular mel filters (n_mels, n_fft // 2 + 1) float32, computed in float64.

    Filter m (0-based) rises linearly from f[m] to its peak at f[m+1] and falls to f[m+2],
    where f = mel_to_hz(linspace(mel(f_min), mel(f_max), n_mels + 2)); "slaney" norm scales
    it by 2 / (f[m+2] - f[m]) so every triangle has the same area in Hz.
    """
    _check_choice("mel_scale", mel_scale, _MEL_SCALES)
    _check_choice("norm", norm, _MEL_NORMS)
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    bin_hz = np.arange(n_fft // 2 + 1, dtype=np.float64) * (sample_rate / n_fft)  # (F,)
    mel_lo, mel_hi = hz_to_mel([f_min, f_max], mel_scale).tolist()
    step = (mel_hi - mel_lo) / (n_mels + 1)
    edges = mel_to_hz(mel_lo + step * np.arange(n_mels + 2, dtype=np.float64), mel_scale)  # (n_mels + 2,)
    edges[0], edges[-1] = f_min, f_max  # exact, not a mel round trip: the top bin then weighs 0
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_hz - left) / (centre - left)
    falling = (right - bin_hz) / (right - centre)
    fb = np.maximum(np.minimum(rising, falling), 0.0)  # (n_mels, F)
    if norm == "slaney":
        fb = fb * (2.0 / (right - left))
    return fb.astype(np.float32)


def window(cfg: MelConfig) -> np.ndarray:
    """The analysis window, ``win_length`` taps zero-padded (centred) to (n_fft,), float64."""
    taps = cfg.win_length
    span = taps if cfg.periodic_window else taps - 1
    n = np.arange(taps, dtype=np.float64)
    if taps == 1:
        w = np.ones(1)
    elif cfg.window == "bartlett":
        w = 1.0 - np.abs(2.0 * n / span - 1.0)
    else:
        a0, a1, a2 = _COSINE_WINDOWS[cfg.window]
        w = a0 - a1 * np.cos(2.0 * np.pi * n / span) + a2 * np.cos(4.0 * np.pi * n / span)
    left = (cfg.n_fft - taps) // 2
    return np.pad(w, (left, cfg.n_fft - taps - left))


@functools.lru_cache(maxsize=64)
def tables(cfg: MelConfig) -> tuple[np.ndarray, np.ndarray]:
    """(window (n_fft,), filter bank (n_mels, n_fft // 2 + 1)) of `cfg`, float32, read-only (shared)."""
    w = window(cfg).astype(np.float32)
    fb = filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max, cfg.mel_scale, cfg.mel_norm)
    w.flags.writeable = fb.flags.writeable = False
    return w, fb


def frame_counts(lengths, cfg: MelConfig, center: bool | None = None) -> np.ndarray:
    """Frames produced from ``lengths`` valid samples: (B,) ints -> (B,) int64, never negative.

    ``(L + 2 * (n_fft // 2) - n_fft) // hop + 1`` when centred, ``(L - n_fft) // hop + 1``
    otherwise, minus one when ``drop_last_frame``."""
    center = cfg.center if center is None else center
    n = np.asarray(lengths, dtype=np.int64) + (2 * (cfg.n_fft // 2) if center else 0)
    return np.maximum((n - cfg.n_fft) // cfg.hop_length + 1 - int(cfg.drop_last_frame), 0)
