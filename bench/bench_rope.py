"""Fused q/k RMSNorm + RoPE (polyasr.kernels.rope) against torch's unfused sequence.

    .venv/bin/python -m pytest bench/bench_rope.py --benchmark-only

The baseline is the plain-torch form on the same tensors — `rope_ref`: rms_norm per head (fp32
statistic), two half-slices, a concatenation, two multiplies and an add — what the torch backend
runs. On CUDA each case prints time, GB/s (x read once, the tables read once, the output written
once: the least traffic, what bounds this op) and the ratio to the baseline, for Qwen3-ASR-0.6B's
q projection (16 heads x 128) at prefill and one decoding step of a batch of 16, and GigaAM v3's
rotary input (channels-last, 16 x 48, no norm). Without CUDA the kernel runs in the Triton
interpreter on tiny shapes, one round: a smoke check that the benchmark works, not a speed measurement.
"""

from __future__ import annotations

import os

import pytest
import torch
from conftest import record

CUDA = torch.cuda.is_available()
if not CUDA:  # read when the kernel is decorated: before polyasr.kernels.rope is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

# name: (x shape, head dim D, qk-norm, dtype); a 3-D shape is channels-last (B, T, H*D)
CUDA_CASES = {
    "qwen3 q prefill (16x128, 8 x 400 tokens)": ((8, 16, 400, 128), 128, True, torch.float16),
    "qwen3 q decode step (16x128, batch 16)": ((16, 16, 1, 128), 128, True, torch.float16),
    "gigaam-v3 rotary input (16x48, 8 x 750 frames)": ((8, 750, 768), 48, False, torch.float16),
}
CPU_CASES = {
    "tiny qk-norm (interpreter)": ((2, 4, 20, 64), 64, True, torch.float32),
    "tiny channels-last (interpreter)": ((2, 20, 128), 32, False, torch.float32),
}
CASES = CUDA_CASES if CUDA else CPU_CASES
IMPLS = ("torch", "polyasr")


def _bytes(case) -> float:
    shape, d, _, dtype = case
    t = shape[2] if len(shape) == 4 else shape[1]
    n = 1
    for s in shape:
        n *= s
    return (2 * n + 2 * t * d) * torch.finfo(dtype).bits / 8


def _target(impl: str, case):
    from polyasr.kernels.rope import rope, rope_ref

    shape, d, norm, dtype = case
    device = "cuda" if CUDA else "cpu"
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(shape, device=device, generator=gen).to(dtype)
    t = shape[2] if len(shape) == 4 else shape[1]
    angles = torch.outer(
        torch.arange(t, device=device, dtype=torch.float32), 1e-4 ** (torch.arange(0, d, 2, device=device) / d)
    )
    cos, sin = (f(torch.cat((angles, angles), -1)).to(dtype) for f in (torch.cos, torch.sin))
    w = (1 + 0.1 * torch.randn(d, device=device, generator=gen)).to(dtype) if norm else None
    sync = torch.cuda.synchronize if CUDA else (lambda: None)
    if impl == "torch":
        fn = lambda: rope_ref(x, cos, sin, w)
    else:
        fn = lambda: rope(x, cos, sin, w)
        # Never time a wrong answer.
        torch.testing.assert_close(fn(), rope_ref(x, cos, sin, w), atol=2e-2, rtol=2e-2)
    fn()
    sync()
    return lambda: (fn(), sync())


@pytest.mark.parametrize("case,impl", [(c, i) for c in CASES for i in IMPLS], ids=lambda x: str(x))
def test_rope(benchmark, capsys, case, impl):
    group = f"rope {case}" + ("" if CUDA else " — Triton interpreter smoke run, no speed claim")
    benchmark.group = group
    benchmark.pedantic(_target(impl, CASES[case]), rounds=50 if CUDA else 1, warmup_rounds=5 if CUDA else 0)
    if benchmark.stats is None:
        return
    record(group, "torch", impl, benchmark)
    best = benchmark.stats.stats.min
    gbps = _bytes(CASES[case]) / best / 1e9
    benchmark.extra_info.update(gbps=gbps, shape=str(CASES[case][0]), dtype=str(CASES[case][3]))
    with capsys.disabled():
        if CUDA:
            print(f"\n{case} {impl}: {best * 1e6:.1f} us, {gbps:.0f} GB/s")
        else:
            print(f"\n{case} {impl}: {best * 1e3:.1f} ms (interpreter smoke run; not a speed measurement)")
