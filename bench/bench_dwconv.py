"""Fused Conformer conv-module middle (polyasr.kernels.dwconv) against torch's unfused sequence.

    .venv/bin/python -m pytest bench/bench_dwconv.py --benchmark-only

The baseline is the best plain-torch form on the same tensors: GLU, masked_fill, conv1d(groups=C),
(layer_norm), SiLU — `dwconv_glu_silu_ref`, what the torch backend runs. On CUDA each case prints
time, GB/s (x read once, the output written once: the least traffic, what bounds this op) and the
ratio to the baseline, for Parakeet TDT v3's conv module (C 1024, k 9, BatchNorm folded) and GigaAM
v3's (C 768, k 5, LayerNorm). Without CUDA the kernel runs in the Triton interpreter on tiny shapes,
one round: a smoke check that the benchmark works, not a speed measurement.
"""

from __future__ import annotations

import os

import pytest
import torch
from conftest import record

CUDA = torch.cuda.is_available()
if not CUDA:  # read when the kernel is decorated: before polyasr.kernels.dwconv is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

# name: (B, T, C, K, layer_norm, dtype)
CUDA_CASES = {
    "parakeet-v3 (C1024 k9, 100 s)": (8, 1250, 1024, 9, False, torch.float16),
    "gigaam-v3 (C768 k5 LN, 30 s)": (8, 750, 768, 5, True, torch.float16),
}
CPU_CASES = {
    "tiny (interpreter)": (2, 40, 32, 9, False, torch.float32),
    "tiny LN (interpreter)": (2, 40, 32, 5, True, torch.float32),
}
CASES = CUDA_CASES if CUDA else CPU_CASES
IMPLS = ("torch", "polyasr")


def _bytes(shape) -> float:
    b, t, c, _, _, dtype = shape
    return 3 * b * t * c * torch.finfo(dtype).bits / 8


def _target(impl: str, shape):
    from polyasr.kernels.dwconv import dwconv_glu_silu, dwconv_glu_silu_ref

    b, t, c, k, ln, dtype = shape
    device = "cuda" if CUDA else "cpu"
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(b, t, 2 * c, device=device, generator=gen).to(dtype)
    w = (0.2 * torch.randn(c, k, device=device, generator=gen)).to(dtype)
    bias = torch.randn(c, device=device, generator=gen).to(dtype)
    keep = torch.arange(t, device=device)[None] < torch.tensor([t - 17 * i for i in range(b)], device=device)[:, None]
    norm = (torch.ones(c, device=device, dtype=dtype), torch.zeros(c, device=device, dtype=dtype)) if ln else None
    sync = torch.cuda.synchronize if CUDA else (lambda: None)
    if impl == "torch":
        fn = lambda: dwconv_glu_silu_ref(x, w, bias, keep, norm)
    else:
        fn = lambda: dwconv_glu_silu(x, w, bias, keep, norm)
        # Never time a wrong answer.
        torch.testing.assert_close(fn(), dwconv_glu_silu_ref(x, w, bias, keep, norm), atol=2e-2, rtol=2e-2)
    fn()
    sync()
    return lambda: (fn(), sync())


@pytest.mark.parametrize("case,impl", [(c, i) for c in CASES for i in IMPLS], ids=lambda x: str(x))
def test_dwconv(benchmark, capsys, case, impl):
    shape = CASES[case]
    group = f"dwconv {case}" + ("" if CUDA else " — Triton interpreter smoke run, no speed claim")
    benchmark.group = group
    benchmark.pedantic(_target(impl, shape), rounds=20 if CUDA else 1, warmup_rounds=2 if CUDA else 0)
    if benchmark.stats is None:
        return
    record(group, "torch", impl, benchmark)
    best = benchmark.stats.stats.min
    gbps = _bytes(shape) / best / 1e9
    benchmark.extra_info.update(gbps=gbps, shape=str(shape[:5]), dtype=str(shape[5]))
    with capsys.disabled():
        if CUDA:
            print(f"\n{case} {impl}: {best * 1e3:.3f} ms, {gbps:.0f} GB/s")
        else:
            print(f"\n{case} {impl}: {best * 1e3:.1f} ms (interpreter smoke run; not a speed measurement)")
