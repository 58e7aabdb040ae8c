"""Flash-attention kernel (polyasr.kernels.attention) against torch's scaled_dot_product_attention.

    .venv/bin/python -m pytest bench/bench_attention.py --benchmark-only

On CUDA each case times both on the same tensors (sync inside the timed function) and
prints time, achieved TFLOP/s (4 * B * H * Tq * Tk * D flops, halved for a square causal
mask), GB/s (q, k, v and the output moved once: what bounds a decode step) and the ratio
to sdpa, for the shapes the models run:
Whisper large-v3 encoder self-attention, one Qwen3 decode step against a 1024-token
KV cache (GQA 16:8, D 128), and the GigaAM v3 encoder (D 48, padded to 64 in the kernel).

Without CUDA the kernel runs in the Triton interpreter: tiny shapes, one round, a smoke
check that the benchmark itself works. Those timings say nothing about speed.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from conftest import record

CUDA = torch.cuda.is_available()
if not CUDA:  # read when the kernel is decorated: before polyasr.kernels.attention is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

# name: (B, H, Hkv, Tq, Tk, D, causal, dtype)
CUDA_CASES = {
    "whisper-encoder": (8, 20, 20, 1500, 1500, 64, False, torch.float16),
    "qwen3-decode": (8, 16, 8, 1, 1024, 128, True, torch.bfloat16),
    "gigaam-encoder": (8, 16, 16, 750, 750, 48, False, torch.float16),
}
CPU_CASES = {
    "tiny-encoder (interpreter)": (1, 2, 2, 40, 40, 64, False, torch.float32),
    "tiny-decode (interpreter)": (1, 4, 2, 1, 70, 64, True, torch.float32),
}
CASES = CUDA_CASES if CUDA else CPU_CASES
IMPLS = ("sdpa", "polyasr")


def _flops(b, h, tq, tk, d, causal) -> float:
    """Two matmuls of 2 * Tq * Tk * D flops per head; a square causal mask does about half."""
    full = 4.0 * b * h * tq * tk * d
    return full / 2 if causal and tq == tk else full


def _bytes(shape) -> float:
    """The least memory traffic: q and out once, k and v once (a decode step is bound by this)."""
    b, h, hkv, tq, tk, d, _, dtype = shape
    return (2 * b * h * tq * d + 2 * b * hkv * tk * d) * torch.finfo(dtype).bits / 8


def _target(impl: str, shape):
    """A no-argument callable running one attention forward with ``impl`` and waiting for it."""
    b, h, hkv, tq, tk, d, causal, dtype = shape
    device = "cuda" if CUDA else "cpu"
    gen = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(b, h, tq, d, device=device, generator=gen).to(dtype)
    k = torch.randn(b, hkv, tk, d, device=device, generator=gen).to(dtype)
    v = torch.randn(b, hkv, tk, d, device=device, generator=gen).to(dtype)
    sync = torch.cuda.synchronize if CUDA else (lambda: None)
    if impl == "sdpa":
        # sdpa's is_causal is top-left aligned; with one query row (decode) it must be off.
        is_causal = causal and tq == tk
        fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, enable_gqa=h != hkv)
    else:
        from polyasr.kernels.attention import attention

        fn = lambda: attention(q, k, v, causal=causal)
        # Never time a wrong answer: the output must match sdpa's on these tensors.
        keep = torch.ones(tq, tk, dtype=torch.bool, device=device).tril(tk - tq) if causal else None
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, enable_gqa=h != hkv)
        torch.testing.assert_close(fn(), expected, atol=2e-2, rtol=2e-2)
    fn()  # compile / warm up outside the timing
    sync()
    return lambda: (fn(), sync())


@pytest.mark.parametrize("case,impl", [(c, i) for c in CASES for i in IMPLS], ids=lambda x: str(x))
def test_attention(benchmark, capsys, case, impl):
    shape = CASES[case]
    group = f"attention {case}" + ("" if CUDA else " — Triton interpreter smoke run, no speed claim")
    benchmark.group = group
    benchmark.pedantic(_target(impl, shape), rounds=20 if CUDA else 1, warmup_rounds=2 if CUDA else 0)
    if benchmark.stats is None:  # --benchmark-disable: nothing measured
        return
    record(group, "sdpa", impl, benchmark)
    b, h, _, tq, tk, d, causal, dtype = shape
    best = benchmark.stats.stats.min
    tflops = _flops(b, h, tq, tk, d, causal) / best / 1e12
    gbps = _bytes(shape) / best / 1e9
    benchmark.extra_info.update(tflops=tflops, gbps=gbps, shape=str(shape[:6]), causal=causal, dtype=str(dtype))
    with capsys.disabled():
        if CUDA:
            print(f"\n{case} {impl}: {best * 1e3:.3f} ms, {tflops:.1f} TFLOP/s, {gbps:.0f} GB/s")
        else:
            print(f"\n{case} {impl}: {best * 1e3:.1f} ms (interpreter smoke run; not a speed measurement)")
