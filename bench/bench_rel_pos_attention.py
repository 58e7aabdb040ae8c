"""Fused Transformer-XL attention (polyasr.kernels.rel_pos_attention) against the torch form.

    .venv/bin/python -m pytest bench/bench_rel_pos_attention.py --benchmark-only

The baseline is `rel_pos_attention_ref` (what the torch backend runs): one matmul for the position
term over all 2T-1 distances, the relative shift as a strided view, then SDPA with that as a float
mask — a float mask rules out SDPA's flash backend, so this is the best torch form on these tensors.
On CUDA each case prints time, TFLOP/s (6 * B * H * T^2 * D: content, position and value products,
the position term counted at its ideal T x T cost) and the ratio to the baseline, for Parakeet TDT
v3's encoder (H 8, D 128) on 100 s. Without CUDA: the Triton interpreter on tiny shapes, one round,
a smoke check only.
"""

from __future__ import annotations

import os

import pytest
import torch
from conftest import record

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# name: (B, H, T, D, dtype)
CUDA_CASES = {
    "parakeet-v3 encoder (100 s)": (4, 8, 1250, 128, torch.float16),
    "parakeet-v3 encoder (20 s)": (16, 8, 250, 128, torch.float16),
}
CPU_CASES = {"tiny (interpreter)": (2, 2, 40, 64, torch.float32)}
CASES = CUDA_CASES if CUDA else CPU_CASES
IMPLS = ("torch", "polyasr")


def _target(impl: str, shape):
    from polyasr.kernels.rel_pos_attention import rel_pos_attention, rel_pos_attention_ref

    b, h, t, d, dtype = shape
    device = "cuda" if CUDA else "cpu"
    gen = torch.Generator(device=device).manual_seed(0)
    rnd = lambda *s: torch.randn(*s, device=device, generator=gen).to(dtype)  # noqa: E731
    q, k, v, pos, u, vb = (
        rnd(b, h, t, d),
        rnd(b, h, t, d),
        rnd(b, h, t, d),
        rnd(h, 2 * t - 1, d),
        rnd(h, 1, d),
        rnd(h, 1, d),
    )
    keep = torch.arange(t, device=device)[None] < torch.tensor([t - 31 * i for i in range(b)], device=device)[:, None]
    mask = keep[:, None, None, :]
    sync = torch.cuda.synchronize if CUDA else (lambda: None)
    if impl == "torch":
        fn = lambda: rel_pos_attention_ref(q, k, v, pos, u, vb, mask=mask)
    else:
        fn = lambda: rel_pos_attention(q, k, v, pos, u, vb, key_mask=keep)
        torch.testing.assert_close(fn(), rel_pos_attention_ref(q, k, v, pos, u, vb, mask=mask), atol=2e-2, rtol=2e-2)
    fn()
    sync()
    return lambda: (fn(), sync())


@pytest.mark.parametrize("case,impl", [(c, i) for c in CASES for i in IMPLS], ids=lambda x: str(x))
def test_rel_pos_attention(benchmark, capsys, case, impl):
    shape = CASES[case]
    group = f"rel-pos attention {case}" + ("" if CUDA else " — Triton interpreter smoke run, no speed claim")
    benchmark.group = group
    benchmark.pedantic(_target(impl, shape), rounds=20 if CUDA else 1, warmup_rounds=2 if CUDA else 0)
    if benchmark.stats is None:
        return
    record(group, "torch", impl, benchmark)
    b, h, t, d, dtype = shape
    best = benchmark.stats.stats.min
    tflops = 6.0 * b * h * t * t * d / best / 1e12
    benchmark.extra_info.update(tflops=tflops, shape=str(shape[:4]), dtype=str(dtype))
    with capsys.disabled():
        if CUDA:
            print(f"\n{case} {impl}: {best * 1e3:.3f} ms, {tflops:.1f} TFLOP/s")
        else:
            print(f"\n{case} {impl}: {best * 1e3:.1f} ms (interpreter smoke run; not a speed measurement)")
