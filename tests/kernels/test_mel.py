"""polyasr.kernels.mel: the log-mel reference matches openai-whisper and transformers' Whisper
frontends, its filter banks match whisper's asset and the htk formula, windowed whisper_log
equals the whole-file result, batching with lengths equals per-item runs, and the NeMo-style
ln / per-feature path matches a direct float64 numpy formula."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_close, log_mel_tolerance, skip_missing, tolerance

import polyasr.kernels.mel as mel_module
from polyasr.kernels.mel import (
    MelConfig,
    log_mel_ref,
    mel_filterbank,
    mel_power,
    num_frames,
    whisper_log,
    window_tensor,
)
from polyasr.kernels.mel_tables import hz_to_mel, mel_to_hz

SR = 16000
# NeMo's FastConformer / Parakeet preprocessor and GigaAM v3's, as their preprocessor configs state them.
NEMO = MelConfig(
    n_fft=512,
    n_mels=128,
    periodic_window=False,
    pad_mode="constant",
    preemphasis=0.97,
    log="ln",
    log_guard=2.0**-24,
    log_guard_type="add",
    normalize="per_feature",
)
GIGAAM = MelConfig(
    n_fft=320,
    win_length=320,
    n_mels=64,
    center=False,
    mel_scale="htk",
    mel_norm=None,
    log="ln",
    log_guard=1e-9,
    log_clamp_max=1e9,
)


def _signal(kind: str, seconds: float, seed: int = 0) -> np.ndarray:
    """Deterministic test audio, (N,) float32 in [-1, 1]; a fresh copy each call."""
    return _cached_signal(kind, seconds, seed).copy()


@functools.cache
def _cached_signal(kind: str, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    if kind == "chirp":  # linear sweep 50 Hz -> 7.9 kHz
        x = 0.5 * np.sin(2 * np.pi * (50 * t + (7850 / (2 * seconds)) * t**2))
    elif kind == "voiced":  # harmonics of a wobbling 120 Hz pitch, syllable-rate envelope, a little noise
        f0 = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
        phase = 2 * np.pi * np.cumsum(f0) / SR
        x = sum(np.sin(k * phase) / k for k in range(1, 30)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2
        x = 0.2 * x + 0.01 * rng.standard_normal(t.size)
    else:  # noise bursts and a tone, with a stretch of exact silence (hits the log clamp)
        x = 0.1 * rng.standard_normal(t.size) * (np.sin(2 * np.pi * 0.3 * t) > 0) + 0.05 * np.sin(2 * np.pi * 440 * t)
        x[SR * 5 : SR * 9] = 0.0
    return x.astype(np.float32)


SIGNALS = [("chirp", 1.0), ("voiced", 7.3), ("mixed", 30.0)]


# (a) openai-whisper -------------------------------------------------------------------------


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("kind,seconds", SIGNALS)
def test_whisper_matches_openai_whisper(kind, seconds, n_mels):
    whisper_audio = pytest.importorskip("whisper.audio")
    x = _signal(kind, seconds)
    expected = whisper_audio.log_mel_spectrogram(torch.from_numpy(x), n_mels)  # (n_mels, N // 160)
    feats, frame_lengths = log_mel_ref(torch.from_numpy(x), MelConfig.whisper(n_mels))
    assert frame_lengths.tolist() == [expected.shape[1]]
    tol = log_mel_tolerance(x, MelConfig.whisper(n_mels))[0]
    assert_close(feats[0], expected, tol, what=f"whisper {kind} {seconds}s n_mels={n_mels}")


# (b) transformers' WhisperFeatureExtractor --------------------------------------------------


def _padded_30s(x: np.ndarray) -> np.ndarray:
    out = np.zeros(30 * SR, np.float32)
    out[: x.size] = x[: out.size]
    return out


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("kind,seconds", SIGNALS)
def test_whisper_matches_transformers(kind, seconds, n_mels):
    transformers = pytest.importorskip("transformers")
    fe = transformers.WhisperFeatureExtractor(feature_size=n_mels)
    x = _signal(kind, seconds)
    expected = fe(x, sampling_rate=SR, return_tensors="np").input_features[0]  # pads to 30 s itself
    feats, _ = log_mel_ref(torch.from_numpy(_padded_30s(x)), MelConfig.whisper(n_mels))
    tol = log_mel_tolerance(_padded_30s(x), MelConfig.whisper(n_mels))[0]
    assert_close(feats[0], expected, tol, what=f"transformers {kind} {seconds}s n_mels={n_mels}")


@pytest.mark.parametrize("kind,seconds", SIGNALS)
def test_whisper_matches_transformers_numpy_path(kind, seconds, n_mels=128):
    """transformers' numpy path (used when torch is absent) runs in float64: differences are fp32 rounding."""
    transformers = pytest.importorskip("transformers")
    fe = transformers.WhisperFeatureExtractor(feature_size=n_mels)
    if not hasattr(fe, "_np_extract_fbank_features"):
        pytest.skip("this transformers version has no numpy feature path")
    padded = _padded_30s(_signal(kind, seconds))
    expected = fe._np_extract_fbank_features(padded[None], "cpu")[0]
    feats, _ = log_mel_ref(torch.from_numpy(padded), MelConfig.whisper(n_mels))
    tol = log_mel_tolerance(padded, MelConfig.whisper(n_mels))[0]
    assert_close(feats[0], expected, tol, what=f"transformers numpy {kind} {seconds}s n_mels={n_mels}")


# (c) filter banks ---------------------------------------------------------------------------


@pytest.mark.parametrize("n_mels", [80, 128])
def test_slaney_filterbank_matches_whisper_asset(n_mels):
    whisper = pytest.importorskip("whisper")
    asset = Path(whisper.__file__).parent / "assets" / "mel_filters.npz"
    with np.load(asset) as data:
        expected = data[f"mel_{n_mels}"]
    fb = mel_filterbank(SR, 400, n_mels, mel_scale="slaney", norm="slaney")
    assert fb.dtype == torch.float32 and fb.shape == (n_mels, 201)
    # both are the float64 formula rounded once to float32
    assert_close(fb, expected, atol=0.0, rtol=tolerance(magnitude=1.0), what=f"slaney filter bank, {n_mels} mels")


def _htk_edges(n_mels: int, f_min: float, f_max: float) -> list[float]:
    """n_mels + 2 frequencies equally spaced on the htk mel scale, 2595 log10(1 + f / 700)."""
    to_mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)
    lo, hi = to_mel(f_min), to_mel(f_max)
    return [700.0 * (10.0 ** ((lo + (hi - lo) * i / (n_mels + 1)) / 2595.0) - 1.0) for i in range(n_mels + 2)]


def _htk_triangles(n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Unnormalised triangles peaking at the htk mel centres, evaluated bin by bin: (n_mels, F)."""
    edges = _htk_edges(n_mels, f_min, f_max)
    out = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        left, centre, right = edges[m : m + 3]
        for k in range(n_fft // 2 + 1):
            f = k * SR / n_fft
            if left < f <= centre:
                out[m, k] = (f - left) / (centre - left)
            elif centre < f < right:
                out[m, k] = (right - f) / (right - centre)
    return out


@pytest.mark.parametrize("n_fft,n_mels,f_min,f_max", [(320, 64, 0.0, 8000.0), (512, 40, 20.0, 7600.0)])
def test_htk_filterbank_matches_formula(n_fft, n_mels, f_min, f_max):
    fb = mel_filterbank(SR, n_fft, n_mels, f_min, f_max, mel_scale="htk", norm=None).double().numpy()
    # weights <= 1, computed in float64 and rounded once to float32
    assert_close(fb, _htk_triangles(n_fft, n_mels, f_min, f_max), tolerance(magnitude=1.0), what="htk filter bank")
    # Unnormalised triangles add up to one between the first and last centres.
    edges = _htk_edges(n_mels, f_min, f_max)
    hz = np.arange(n_fft // 2 + 1) * SR / n_fft
    inside = (hz >= edges[1]) & (hz <= edges[-2])
    assert_close(fb.sum(0)[inside], np.ones(inside.sum()), reduction=2, what="htk partition of unity")


def _htk_bank_float64() -> np.ndarray:
    """torchaudio's htk triangle construction, in float64: (80, 201)."""
    freqs = np.linspace(0, SR / 2, 201)
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    pts = 700.0 * (10 ** (np.linspace(mel(0.0), mel(8000.0), 82) / 2595.0) - 1.0)
    diff = np.diff(pts)
    slopes = pts[None, :] - freqs[:, None]
    down, up = -slopes[:, :-2] / diff[:-1], slopes[:, 2:] / diff[1:]
    return np.maximum(0, np.minimum(down, up)).T


@pytest.mark.parametrize("mel_scale,norm", [("htk", None), ("slaney", "slaney")])
def test_filterbank_matches_torchaudio(mel_scale, norm):
    try:
        from torchaudio.functional import melscale_fbanks
    except Exception as exc:  # absent, or built against another torch
        skip_missing(f"torchaudio.functional.melscale_fbanks cannot be imported: {exc!r}")
    expected = melscale_fbanks(201, 0.0, 8000.0, 80, SR, norm=norm, mel_scale=mel_scale).T
    # torchaudio builds the bank in float32 (mel points, Hz conversions, slopes); ours in float64,
    # rounded once. A frequency near f_max is rounded by u * f_max, and a weight is a frequency
    # difference over its triangle's half-width: the error grows by f_max / (narrowest half-width).
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0, mel_scale), hz_to_mel(8000.0, mel_scale), 82), mel_scale)
    m = float(expected.abs().max()) * 8000.0 / float(np.diff(edges).min())
    ours = mel_filterbank(SR, 400, 80, mel_scale=mel_scale, norm=norm)
    assert_close(ours, expected, magnitude=m, what="torchaudio")
    float64_ref = _htk_bank_float64() if mel_scale == "htk" else None
    if float64_ref is not None:  # against the same formula in float64, ours is exact to float32 rounding
        ours = mel_filterbank(SR, 400, 80, mel_scale="htk", norm=None)
        assert_close(ours, float64_ref, tolerance(magnitude=1.0), what="htk float64")


# (d) whisper_log window by window -----------------------------------------------------------


def test_whisper_log_windows_with_file_max_equal_whole():
    cfg = MelConfig.whisper(80)
    x = _signal("mixed", 65.0)
    x[: SR * 20] *= 8.0  # the loudest part sits in the first window only
    mel = mel_power(torch.from_numpy(x), cfg)  # (1, 80, 6500)
    whole = whisper_log(mel)
    file_max = mel.amax(dim=(-2, -1)).clamp(min=1e-10).log10()  # (1,)
    windows = [mel[..., s : s + 3000] for s in range(0, mel.shape[-1], 3000)]
    assert torch.equal(torch.cat([whisper_log(w, file_max) for w in windows], dim=-1), whole)
    assert torch.equal(torch.cat([whisper_log(w, float(file_max)) for w in windows], dim=-1), whole)
    # Without the file's max, a quiet window is floored at its own max - 8 and differs.
    assert not torch.equal(whisper_log(windows[-1]), whole[..., 6000:])


# (e) batches with lengths -------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [MelConfig.whisper(80), NEMO, GIGAAM], ids=["whisper", "nemo", "gigaam"])
def test_batch_with_lengths_equals_items_alone(cfg):
    lengths = [SR * 2, 24_321, 1_000, 17_777]
    batch = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        batch[i, :n] = torch.from_numpy(_signal(("chirp", "voiced", "mixed")[i % 3], n / SR, seed=i))
    batch[1, lengths[1] :] = 0.3  # junk past an item's length must not leak in
    feats, frame_lengths = log_mel_ref(batch, cfg, lengths=torch.tensor(lengths))
    assert frame_lengths.tolist() == num_frames(torch.tensor(lengths), cfg).tolist()
    for i, n in enumerate(lengths):
        alone, alone_frames = log_mel_ref(batch[i, :n], cfg)
        t = int(frame_lengths[i])
        assert alone_frames.tolist() == [t] and alone.shape[-1] == t
        tol = log_mel_tolerance(batch[i, :n], cfg)[0]
        assert_close(feats[i, :, :t], alone[0], tol, what=f"item {i}")
        assert not feats[i, :, t:].any(), f"item {i}: frames past its length are not zero"


def test_num_frames():
    n = torch.tensor([0, 159, 160, 480_000])
    assert num_frames(n, MelConfig()).tolist() == [1, 1, 2, 3001]
    assert num_frames(n, MelConfig.whisper()).tolist() == [0, 0, 1, 3000]
    assert num_frames(n, GIGAAM).tolist() == [0, 0, 0, 2999]
    assert num_frames(n, NEMO).tolist() == [1, 1, 2, 3001]


# (f) ln + added guard + per-feature normalisation vs numpy ----------------------------------


def _numpy_nemo_features(x: np.ndarray, cfg: MelConfig) -> np.ndarray:
    """NeMo-style features in float64 numpy: (N,) -> (n_mels, T)."""
    x = x.astype(np.float64)
    x = np.concatenate([x[:1], x[1:] - cfg.preemphasis * x[:-1]])
    half = cfg.n_fft // 2
    x = np.pad(x, (half, half))  # constant (zero) centring
    window = np.zeros(cfg.n_fft)
    left = (cfg.n_fft - cfg.win_length) // 2
    window[left : left + cfg.win_length] = np.hanning(cfg.win_length)  # symmetric hann
    n_frames = 1 + (x.size - cfg.n_fft) // cfg.hop_length
    frames = np.stack([x[t * cfg.hop_length : t * cfg.hop_length + cfg.n_fft] for t in range(n_frames)])
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2  # (T, F)
    fb = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, mel_scale=cfg.mel_scale, norm=cfg.mel_norm)
    logmel = np.log(fb.double().numpy() @ power.T + cfg.log_guard)  # (n_mels, T)
    mean = logmel.mean(axis=1, keepdims=True)
    std = logmel.std(axis=1, ddof=1, keepdims=True)
    return (logmel - mean) / (std + 1e-5)


def _nemo_batch(items: list[np.ndarray], dtype: torch.dtype) -> tuple[torch.Tensor, list[int]]:
    batch = torch.zeros(len(items), max(x.size for x in items), dtype=dtype)
    for i, x in enumerate(items):
        batch[i, : x.size] = torch.from_numpy(x)
    return batch, [x.size for x in items]


def test_ln_add_guard_per_feature_matches_numpy():
    # fp32 tolerance: pre-emphasis leaves the lowest bands ~1e-6 below each frame's peak, where fp32 STFT
    # round-off shows up in ln at ~1e-4 (observed 8e-5); the float64 test below pins the formula itself.
    items = [_signal("voiced", 1.5, seed=1), _signal("mixed", 0.8, seed=2)]
    batch, lengths = _nemo_batch(items, torch.float32)
    feats, frame_lengths = log_mel_ref(batch, NEMO, lengths=lengths)
    for i, x in enumerate(items):
        expected = _numpy_nemo_features(x, NEMO)
        assert int(frame_lengths[i]) == expected.shape[1]
        tol = log_mel_tolerance(x, NEMO)[0]
        assert_close(feats[i, :, : expected.shape[1]], expected, tol, what=f"nemo item {i}")


def test_ln_add_guard_per_feature_formula_in_float64():
    """A pure chirp after pre-emphasis leaves low mel bands ~1e-9 below the frame's peak, where fp32
    STFT round-off reaches ~1e-3 after ln and normalisation; in float64 the formula must agree tightly."""
    items = [_signal("chirp", 0.8, seed=3), _signal("voiced", 1.1, seed=4)]
    batch, lengths = _nemo_batch(items, torch.float64)
    feats, _ = log_mel_ref(batch, NEMO, lengths=lengths)
    assert feats.dtype == torch.float64
    for i, x in enumerate(items):
        expected = _numpy_nemo_features(x, NEMO)
        # numpy in, so the helper does not round float64 to float32
        tol = log_mel_tolerance(x, NEMO, dtype="float64")[0]
        assert_close(feats[i, :, : expected.shape[1]].numpy(), expected, tol, what=f"nemo float64 item {i}")


# STFT building blocks -----------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [MelConfig(), NEMO, GIGAAM, MelConfig(power=1.0, window="hamming", win_length=300)])
def test_mel_power_matches_torch_stft(cfg):
    x = torch.from_numpy(_signal("voiced", 0.9))
    if cfg.preemphasis is not None:
        x = torch.cat([x[:1], x[1:] - cfg.preemphasis * x[:-1]])
    window = getattr(torch, f"{cfg.window}_window")(cfg.win_length, periodic=cfg.periodic_window)
    spec = torch.stft(
        x,
        cfg.n_fft,
        cfg.hop_length,
        cfg.win_length,
        window=window,
        center=cfg.center,
        pad_mode=cfg.pad_mode,
        return_complex=True,
    )
    expected = spec.abs() ** cfg.power  # (F, T)
    fb = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max, cfg.mel_scale, cfg.mel_norm)
    mel = fb @ expected
    ours = mel_power(torch.from_numpy(_signal("voiced", 0.9)), cfg)[0]
    assert_close(ours, mel, reduction=cfg.n_fft // 2 + 1, depth=3, what="mel")  # the power, then the bank's sum


@pytest.mark.parametrize("chunk", [1, 37, 400])
def test_chunked_spectrogram_equals_one_pass(monkeypatch, chunk):
    x = torch.from_numpy(np.stack([_signal("voiced", 0.5, seed=s) for s in range(3)]))  # 3 items x 51 frames
    expected = mel_power(x, MelConfig.whisper(80)), mel_power(x, NEMO)
    monkeypatch.setattr(mel_module, "_CHUNK_FRAMES", chunk)
    for ours, ref in zip((mel_power(x, MelConfig.whisper(80)), mel_power(x, NEMO)), expected, strict=True):
        assert_close(ours, ref, reduction=400, depth=3, what=f"chunk {chunk}")  # STFT in a different order


def test_window_is_centred_and_zero_padded():
    w = window_tensor(MelConfig(n_fft=512, win_length=400, periodic_window=False))
    assert w.shape == (512,) and w.dtype == torch.float32
    assert not w[:56].any() and not w[456:].any()
    assert_close(w[56:456], np.hanning(400), tolerance(magnitude=1.0), what="symmetric hann")  # rounded once


def test_config_rejects_unknown_choices():
    with pytest.raises(ValueError, match="mel_scale"):
        MelConfig(mel_scale="bark")
    with pytest.raises(ValueError, match="win_length"):
        MelConfig(n_fft=256, win_length=400)
    with pytest.raises(ValueError, match="reflect padding"):
        log_mel_ref(torch.zeros(100), MelConfig())


@pytest.mark.parametrize("name", ["hann", "hamming", "blackman", "bartlett"])
@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize("taps", [1, 2, 7, 320, 400])
def test_numpy_windows_equal_torchs(name, periodic, taps):
    """kernels.mel_tables builds every window in numpy (the MLX path has no torch): torch's window
    functions are the reference, centred and zero-padded as torch.stft pads them."""
    from polyasr.kernels.mel_tables import window

    cfg = MelConfig(n_fft=512, win_length=taps, window=name, periodic_window=periodic)
    ref = getattr(torch, f"{name}_window")(taps, periodic=periodic, dtype=torch.float64)
    left = (512 - taps) // 2
    expected = torch.nn.functional.pad(ref, (left, 512 - taps - left))
    assert_close(torch.from_numpy(window(cfg)), expected, 1e-12, what=f"{name} periodic={periodic} taps={taps}")
