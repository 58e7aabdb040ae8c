"""Triton log-mel frontend (polyasr.kernels.mel_kernel) against the plain-torch paths.

    .venv/bin/python -m pytest bench/bench_mel_kernel.py --benchmark-only

Three implementations on the same full-length batch: ``ref`` is ``log_mel_ref`` (framing by strided
view, rfft, matmul with the bank: what the torch backend runs; the group's baseline), ``stft`` is
``torch.stft`` + matmul with the bank + log (+ Whisper's floor or per-feature normalisation; no
per-item lengths, so it does a little less than the others), ``polyasr`` the two Triton kernels.
On CUDA each case prints time and GB/s (the audio read once and the features written once: the
least traffic) for Whisper 30 s windows (80 and 128 bins) and Parakeet's 100 s (NeMo frontend).
Without CUDA the kernels run in the Triton interpreter on a tiny case, one round: a smoke check
that the benchmark works, not a speed measurement.
"""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch
from conftest import record

CUDA = torch.cuda.is_available()
if not CUDA:  # read when the kernel is decorated: before polyasr.kernels.mel_kernel is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

from polyasr.kernels.mel import MelConfig  # noqa: E402  (after TRITON_INTERPRET)

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
# name: (config, batch, seconds at 16 kHz)
CUDA_CASES = {
    "whisper 80 bins (8 x 30 s)": (MelConfig.whisper(80), 8, 30.0),
    "whisper 128 bins (8 x 30 s)": (MelConfig.whisper(128), 8, 30.0),
    "parakeet / nemo (8 x 100 s)": (NEMO, 8, 100.0),
}
CPU_CASES = {
    "tiny nemo (interpreter)": (dataclasses.replace(NEMO, n_mels=16), 2, 0.1),
    "tiny whisper (interpreter)": (MelConfig.whisper(80), 2, 0.1),
}
CASES = CUDA_CASES if CUDA else CPU_CASES
IMPLS = ("ref", "stft", "polyasr")


def stft_log_mel(audio: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """torch.stft + bank matmul + log for full-length items: (B, N) -> (B, n_mels, T)."""
    from polyasr.kernels.mel import _cached_filterbank, _cached_window, _ln, _normalize_per_feature, whisper_log

    if cfg.preemphasis is not None:
        audio = torch.cat([audio[:, :1], audio[:, 1:] - cfg.preemphasis * audio[:, :-1]], dim=1)
    spec = torch.stft(
        audio,
        cfg.n_fft,
        cfg.hop_length,
        window=_cached_window(cfg, audio.device, audio.dtype),
        center=cfg.center,
        pad_mode=cfg.pad_mode,
        return_complex=True,
    )  # (B, F, T')
    power = spec.abs().square() if cfg.power == 2.0 else spec.abs().pow(cfg.power)
    mel = _cached_filterbank(cfg, audio.device, audio.dtype) @ (power[..., :-1] if cfg.drop_last_frame else power)
    feats = whisper_log(mel, None, cfg.log_guard) if cfg.log == "log10_whisper" else _ln(mel, cfg)
    if cfg.normalize == "per_feature":
        frames = torch.full((audio.shape[0],), feats.shape[-1], device=audio.device)
        feats = _normalize_per_feature(
            feats, torch.ones(feats.shape[0], feats.shape[-1], dtype=torch.bool, device=audio.device), frames
        )
    return feats


def _bytes(cfg: MelConfig, batch: int, n: int, t: int) -> float:
    return 4.0 * batch * (n + cfg.n_mels * t)


def _target(impl: str, case):
    from polyasr.kernels.mel import log_mel_ref
    from polyasr.kernels.mel_kernel import log_mel

    cfg, batch, seconds = case
    device = "cuda" if CUDA else "cpu"
    gen = torch.Generator(device=device).manual_seed(0)
    audio = 0.1 * torch.randn(batch, int(seconds * cfg.sample_rate), device=device, generator=gen)
    fn = {
        "ref": lambda: log_mel_ref(audio, cfg)[0],
        "stft": lambda: stft_log_mel(audio, cfg),
        "polyasr": lambda: log_mel(audio, cfg)[0],
    }[impl]
    sync = torch.cuda.synchronize if CUDA else (lambda: None)
    out = fn()
    # Never time a wrong answer (1e-3: the fp32 reference itself is off by ~2e-4 in NeMo's lowest bin).
    torch.testing.assert_close(out, log_mel_ref(audio, cfg)[0], atol=1e-3, rtol=0.0)
    sync()
    return (lambda: (fn(), sync())), _bytes(cfg, batch, audio.shape[1], out.shape[-1])


@pytest.mark.parametrize("case,impl", [(c, i) for c in CASES for i in IMPLS], ids=lambda x: str(x))
def test_mel_kernel(benchmark, capsys, case, impl):
    target, nbytes = _target(impl, CASES[case])
    group = f"log-mel {case}" + ("" if CUDA else " — Triton interpreter smoke run, no speed claim")
    benchmark.group = group
    benchmark.pedantic(target, rounds=20 if CUDA else 1, warmup_rounds=2 if CUDA else 0)
    if benchmark.stats is None:
        return
    record(group, "ref", impl, benchmark)
    best = benchmark.stats.stats.min
    gbps = nbytes / best / 1e9
    benchmark.extra_info.update(gbps=gbps)
    with capsys.disabled():
        if CUDA:
            print(f"\n{case} {impl}: {best * 1e3:.3f} ms, {gbps:.0f} GB/s")
        else:
            print(f"\n{case} {impl}: {best * 1e3:.1f} ms (interpreter smoke run; not a speed measurement)")
