"""Flash-attention kernel against its fp32 reference, and the reference against torch's sdpa.

Without CUDA the kernel runs in the Triton interpreter (tests/conftest.py sets
TRITON_INTERPRET=1), which is slow: shapes are tiny but chosen to hit every path — Tq / Tk
of 1, below one block, and one or two blocks plus a tail (the interpreter uses 32 x 32
blocks), head dims 64 and 80 (80 pads to 128), GQA, causal with Tq < Tk (decode) and
Tq > Tk (rows that see no key), per-item key lengths down to 1.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, sdpa_tolerance

from polyasr.kernels.attention import attention, attention_mask, attention_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
LENGTHS = (1, 7, 33, 64 + 5)


def _sweep():
    """Every (Tq, Tk, causal); head dim and heads (MHA 2 or GQA 4:2) alternate so each meets all."""
    cases = []
    for i, (tq, tk, causal) in enumerate(itertools.product(LENGTHS, LENGTHS, (False, True))):
        d, heads = (64, 80)[i % 2], ((2, 2), (4, 2))[(i // 2) % 2]
        cases.append(
            pytest.param(
                tq,
                tk,
                causal,
                d,
                heads,
                id=f"tq{tq}-tk{tk}-{'causal' if causal else 'full'}-d{d}-h{heads[0]}:{heads[1]}",
            )
        )
    return cases


SWEEP = _sweep()


def _qkv(batch, heads, kv_heads, tq, tk, d, dtype=torch.float32, device=DEVICE):
    q = torch.randn(batch, heads, tq, d, device=device).to(dtype)
    k = torch.randn(batch, kv_heads, tk, d, device=device).to(dtype)
    v = torch.randn(batch, kv_heads, tk, d, device=device).to(dtype)
    return q, k, v


def _check(q, k, v, *, kv_lengths=None, causal=False, scale=None, key_mask=None, what="attention"):
    out = attention(q, k, v, kv_lengths=kv_lengths, causal=causal, scale=scale, key_mask=key_mask)
    assert out.dtype == q.dtype and out.shape == q.shape
    ref = attention_ref(q, k, v, kv_lengths=kv_lengths, causal=causal, scale=scale, key_mask=key_mask)
    assert_close(out, ref, atol=sdpa_tolerance(q, k, v, scale), what=what)


def _sdpa(q, k, v, *, kv_lengths=None, causal=False, scale=None):
    keep = attention_mask(q.shape[2], k.shape[2], kv_lengths=kv_lengths, causal=causal, device=q.device)
    gqa = q.shape[1] != k.shape[1]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=scale, enable_gqa=gqa)


# ---- the reference is torch's sdpa ----------------------------------------------------------------


@pytest.mark.parametrize("tq,tk,causal,d,heads", SWEEP)
def test_ref_matches_sdpa(tq, tk, causal, d, heads):
    q, k, v = _qkv(2, *heads, tq, tk, d, torch.float64, "cpu")
    lens = torch.tensor([tk, max(1, tk - 3)])
    for kv_lengths in (None, lens):
        ref = attention_ref(q, k, v, kv_lengths=kv_lengths, causal=causal)
        assert ref.dtype == torch.float64
        assert_close(ref, _sdpa(q, k, v, kv_lengths=kv_lengths, causal=causal), atol=1e-12, what="ref vs sdpa")


def test_ref_causal_square_is_sdpa_is_causal():
    q, k, v = _qkv(1, 2, 2, 9, 9, 16, torch.float64, "cpu")
    assert_close(
        attention_ref(q, k, v, causal=True), F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-12
    )


# ---- kernel against the reference -----------------------------------------------------------------


@pytest.mark.parametrize("tq,tk,causal,d,heads", SWEEP)
def test_kernel_fp32(tq, tk, causal, d, heads):
    _check(*_qkv(2, *heads, tq, tk, d), causal=causal, what=f"fp32 tq={tq} tk={tk} causal={causal}")


@pytest.mark.parametrize(
    "tq,tk,causal", [(1, 69, False), (1, 69, True), (33, 69, True), (69, 69, False), (7, 33, False), (69, 7, True)]
)
@pytest.mark.parametrize("lengths", ["tail", "one"])
def test_kernel_kv_lengths(tq, tk, causal, lengths):
    """Key padding per item: a length with a tail inside a block, and a length of 1."""
    lens = torch.tensor([tk - 3 if tk > 3 else tk, 1] if lengths == "one" else [max(1, tk - 3), max(1, tk // 2 + 1)])
    q, k, v = _qkv(2, 4, 2, tq, tk, 80)
    _check(q, k, v, kv_lengths=lens.to(DEVICE), causal=causal, what=f"lengths {lens.tolist()}")


@pytest.mark.parametrize("tq,tk,causal", [(1, 69, False), (33, 69, True), (69, 69, False), (7, 7, True)])
def test_kernel_key_mask(tq, tk, causal):
    """A per-item boolean key mask with holes (not a prefix), read through a strided view, alone and
    with lengths; item 1 keeps only key 0."""
    keep = torch.rand(2, tk + 3, device=DEVICE) > 0.4
    keep[1] = False
    keep[1, 0] = True
    key_mask = keep[:, :tk]  # (2, Tk) view, batch stride Tk + 3
    assert not key_mask.is_contiguous()
    q, k, v = _qkv(2, 4, 2, tq, tk, 64)
    _check(q, k, v, key_mask=key_mask, causal=causal, what="key mask")
    _check(
        q,
        k,
        v,
        key_mask=key_mask,
        kv_lengths=torch.tensor([tk // 2, tk], device=DEVICE),
        causal=causal,
        what="key mask and lengths",
    )


def test_ref_key_mask_matches_sdpa():
    q, k, v = _qkv(2, 2, 2, 5, 9, 16, torch.float64, "cpu")
    key_mask = torch.rand(2, 9) > 0.5
    key_mask[:, 0] = True
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
    assert_close(attention_ref(q, k, v, key_mask=key_mask), expected, atol=1e-12)


@pytest.mark.parametrize(
    "tq,tk,causal,d,heads,lengths",
    [
        (69, 69, False, 64, (2, 2), None),
        (33, 69, True, 80, (4, 2), None),
        (1, 69, True, 64, (4, 2), (69, 5)),
        (69, 33, False, 80, (2, 2), (1, 33)),
        (7, 7, True, 64, (4, 2), (7, 1)),
    ],
)
def test_kernel_fp16(tq, tk, causal, d, heads, lengths):
    lens = None if lengths is None else torch.tensor(lengths, device=DEVICE)
    _check(*_qkv(2, *heads, tq, tk, d, torch.float16), kv_lengths=lens, causal=causal, what="fp16")


@pytest.mark.skipif(DEVICE == "cpu", reason="the Triton interpreter has no bfloat16")
@pytest.mark.parametrize("tq,tk,causal,d", [(69, 69, True, 64), (1, 1030, True, 128), (750, 750, False, 48)])
def test_kernel_bf16(tq, tk, causal, d):
    _check(*_qkv(2, 4, 2, tq, tk, d, torch.bfloat16), kv_lengths=torch.tensor([tk, 1], device=DEVICE), causal=causal)


def test_kernel_online_softmax_rescales():
    """Scores that grow block after block force the running max (and the rescale) to move."""
    q, k, v = _qkv(1, 2, 2, 33, 69, 64)
    k = k + 0.3 * torch.arange(69, device=DEVICE)[:, None] * q[:, :, :1].mean(2, keepdim=True)
    _check(3.0 * q, k, v, what="growing scores")
    _check(3.0 * q, k.flip(2), v, what="shrinking scores")


def test_kernel_custom_scale_and_head_dim_48():
    _check(*_qkv(2, 2, 1, 33, 40, 48), scale=0.05, what="scale 0.05, D 48, GQA 2:1")


def test_kernel_strided_inputs():
    """(B, T, H, D) transposed to (B, H, T, D), a KV-cache slice, and a non-contiguous last dim."""
    q = torch.randn(2, 7, 4, 64, device=DEVICE).transpose(1, 2)
    cache = torch.randn(2, 2, 100, 64, device=DEVICE)
    k, v = cache[:, :, :37], cache.flip(2)[:, :, :37]
    _check(q, k, v, causal=True, what="strided")
    _check(q, k.transpose(-1, -2).contiguous().transpose(-1, -2), v, what="k with last-dim stride != 1")


def test_kernel_rows_without_keys_are_zero():
    q, k, v = _qkv(2, 2, 2, 9, 5, 64)
    out = attention(q, k, v, kv_lengths=torch.tensor([0, 5], device=DEVICE), causal=True)
    assert torch.all(out[0] == 0) and torch.all(out[1, :, :4] == 0)  # length 0; causal rows 0..3 see nothing
    expected = attention_ref(q, k, v, kv_lengths=torch.tensor([0, 5]), causal=True)
    assert_close(out, expected, atol=sdpa_tolerance(q, k, v))


@pytest.mark.parametrize("tq,tk", [(0, 5), (3, 0)])
def test_kernel_empty(tq, tk):
    q, k, v = _qkv(2, 2, 1, tq, tk, 64)
    out = attention(q, k, v)
    assert out.shape == (2, 2, tq, 64) and torch.all(out == 0)
    assert_close(out, attention_ref(q, k, v), atol=0.0)


@pytest.mark.skipif(DEVICE != "cpu", reason="CPU tensors are refused only outside the interpreter")
def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        attention(*_qkv(1, 1, 1, 2, 2, 16))


@pytest.mark.parametrize(
    "args,match",
    [
        (((2, 4, 3, 64), (2, 3, 5, 64), (2, 3, 5, 64)), "kv heads must divide"),
        (((2, 4, 3, 64), (2, 4, 5, 32), (2, 4, 5, 32)), "batch or head dim"),
        (((2, 4, 3, 64), (2, 4, 5, 64), (2, 4, 6, 64)), "same shape"),
        (((4, 3, 64), (2, 4, 5, 64), (2, 4, 5, 64)), r"\(B, H, T, D\)"),
        (((1, 1, 3, 512), (1, 1, 5, 512), (1, 1, 5, 512)), "head dim 512"),
    ],
)
def test_bad_shapes(args, match):
    q, k, v = (torch.zeros(s, device=DEVICE) for s in args)
    with pytest.raises(ValueError, match=match):
        attention(q, k, v)


def test_bad_dtypes_and_lengths():
    q, k, v = _qkv(2, 2, 2, 3, 5, 64)
    with pytest.raises(ValueError, match="must share one of"):
        attention(q, k.half(), v)
    with pytest.raises(ValueError, match="must share one of"):
        attention(q.double(), k.double(), v.double())
    with pytest.raises(ValueError, match=r"kv_lengths must be a \(2,\) tensor"):
        attention(q, k, v, kv_lengths=torch.tensor([5], device=DEVICE))
    with pytest.raises(ValueError, match="kv_lengths must be integer"):
        attention(q, k, v, kv_lengths=torch.tensor([5.0, 1.0], device=DEVICE))
    with pytest.raises(ValueError, match=r"key_mask must be a bool \(2, 5\) tensor"):
        attention(q, k, v, key_mask=torch.ones(2, 5, device=DEVICE))
    with pytest.raises(ValueError, match=r"key_mask must be a bool \(2, 5\) tensor"):
        attention(q, k, v, key_mask=torch.ones(2, 1, 1, 5, dtype=torch.bool, device=DEVICE))
