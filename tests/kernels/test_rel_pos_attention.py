"""polyasr.kernels.rel_pos_attention: the reference against the Transformer-XL formula written out
element by element in float64 (and against NeMo-style pad-and-reshape rel_shift), and the fused
kernel (relative shift by index arithmetic) against the reference over lengths, masks and dtypes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, attention_tolerance

from polyasr.kernels.rel_pos_attention import rel_pos_attention, rel_pos_attention_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(batch, heads, t, d, dtype=torch.float32, device=DEVICE):
    g = lambda *s: torch.randn(*s, device=device)  # noqa: E731
    q, k, v, pos = g(batch, heads, t, d), g(batch, heads, t, d), g(batch, heads, t, d), g(heads, 2 * t - 1, d)
    bias_u, bias_v = 0.5 * g(heads, 1, d), 0.5 * g(heads, 1, d)
    return tuple(z.to(dtype) for z in (q, k, v, pos, bias_u, bias_v))


def _key_mask(batch, t, device=DEVICE):
    lengths = torch.tensor([t, max(1, t // 2 + 1), 1][:batch], device=device)
    return torch.arange(t, device=device)[None] < lengths[:, None]


def _formula(q, k, v, pos, bias_u, bias_v, keep):
    """scores[i, j] = ((q_i + u) . k_j + (q_i + v) . pos[T-1-i+j]) / sqrt(D), element by element."""
    t, d = q.shape[2], q.shape[3]
    scores = torch.empty(*q.shape[:2], t, t, dtype=q.dtype)
    for i in range(t):
        for j in range(t):
            content = ((q[:, :, i] + bias_u[:, 0]) * k[:, :, j]).sum(-1)
            position = ((q[:, :, i] + bias_v[:, 0]) * pos[None, :, t - 1 - i + j]).sum(-1)
            scores[:, :, i, j] = (content + position) / d**0.5
    if keep is not None:
        scores = scores.masked_fill(~keep[:, None, None, :], -torch.inf)
    return scores.softmax(-1) @ v


def _rel_shift(x):
    """NeMo's rel_shift: (B, H, T, 2T-1) -> pad one column left, reshape, drop the first row, keep T columns."""
    b, h, t, w = x.shape
    x = F.pad(x, (1, 0)).view(b, h, w + 1, t)[:, :, 1:].view(b, h, t, w)
    return x[..., : (w + 1) // 2]


@pytest.mark.parametrize("rows", [None, 1, 2, 4, 9])
@pytest.mark.parametrize("t", [1, 2, 9])
def test_ref_is_the_formula(t, rows):
    """In one block or in blocks of `rows` queries (the last one shorter)."""
    q, k, v, pos, u, vb = _inputs(3, 2, t, 8, torch.float64, "cpu")
    keep = _key_mask(3, t, "cpu")
    expected = _formula(q, k, v, pos, u, vb, keep)
    got = rel_pos_attention_ref(q, k, v, pos, u, vb, mask=keep[:, None, None, :], rows=rows)
    assert_close(got, expected, atol=1e-12)
    got = rel_pos_attention_ref(q, k, v, pos, u, vb, rows=rows)
    assert_close(got, _formula(q, k, v, pos, u, vb, None), atol=1e-12)


def test_cpu_path_bounds_the_positional_block(monkeypatch):
    """The torch backend's CPU path splits the queries so each block's positional scores stay under
    ATTENTION_BLOCK_BYTES, and gives the one-block result."""
    from polyasr.backends import torch as torch_backend

    q, k, v, pos, u, vb = _inputs(2, 2, 40, 8, torch.float32, "cpu")
    keep = _key_mask(2, 40, "cpu")[:, None, None, :]
    whole = rel_pos_attention_ref(q, k, v, pos, u, vb, mask=keep)
    monkeypatch.setattr(torch_backend, "ATTENTION_BLOCK_BYTES", 2 * 2 * 2 * 40 * 4 * 7)  # 7 rows a block
    seen = []
    real_matmul = torch.matmul
    monkeypatch.setattr(torch, "matmul", lambda a, b: seen.append(a.shape[2]) or real_matmul(a, b))
    got = torch_backend.TorchBackend("cpu", "float32").rel_pos_attention(q, k, v, pos, u, vb, mask=keep)
    monkeypatch.undo()
    assert seen == [7] * 5 + [5]
    assert_close(got, whole, atol=_tolerance(q, k, v, pos, u, vb), what="CPU path in blocks vs one block")


def test_ref_shift_is_nemo_rel_shift():
    q, k, v, pos, u, vb = _inputs(2, 3, 11, 8, torch.float64, "cpu")
    bd = _rel_shift((q + vb) @ pos.transpose(-1, -2)) / 8**0.5
    expected = F.scaled_dot_product_attention(q + u, k, v, attn_mask=bd)
    assert_close(rel_pos_attention_ref(q, k, v, pos, u, vb), expected, atol=1e-12)


def _tolerance(q, k, v, pos, bias_u, bias_v):
    """Scores are (q + u) k + (q + v) p over D channels, scaled by 1/sqrt(D): 2D products per score."""
    m = lambda z: z.float().abs().max().item()  # noqa: E731
    d = q.shape[-1]
    terms = (m(q) + max(m(bias_u), m(bias_v))) * max(m(k), m(pos)) * d**-0.5
    return attention_tolerance(values=m(v), score_terms=terms, reduction=2 * d, dtype=q.dtype)


# (B, H, T, D): T 1 .. 40 across the 16-row blocks of the interpreter (tails, one block, several);
# D 64 / 80 (padded to 128) / 8 (Parakeet's tiny test config).
SWEEP = [(2, 2, 1, 64), (3, 2, 7, 80), (2, 4, 16, 64), (3, 2, 17, 8), (2, 2, 40, 80), (1, 1, 33, 64)]


@pytest.mark.parametrize("batch,heads,t,d", SWEEP, ids=lambda v: str(v))
@pytest.mark.parametrize("masked", [False, True])
def test_kernel_fp32(batch, heads, t, d, masked):
    q, k, v, pos, u, vb = _inputs(batch, heads, t, d)
    keep = _key_mask(batch, t) if masked else None
    out = rel_pos_attention(q, k, v, pos, u, vb, key_mask=keep)
    assert out.dtype == q.dtype and out.shape == q.shape
    ref = rel_pos_attention_ref(q, k, v, pos, u, vb, mask=None if keep is None else keep[:, None, None, :])
    assert_close(out, ref, atol=_tolerance(q, k, v, pos, u, vb), what=f"fp32 T={t} D={d} masked={masked}")


@pytest.mark.parametrize("t", [7, 33])
def test_kernel_fp16(t):
    inputs = _inputs(3, 2, t, 64, torch.float16)
    keep = _key_mask(3, t)
    out = rel_pos_attention(*inputs, key_mask=keep)
    ref = rel_pos_attention_ref(*(z.float() for z in inputs), mask=keep[:, None, None, :])
    assert_close(out, ref, atol=_tolerance(*inputs), what="fp16")


@pytest.mark.skipif(DEVICE == "cpu", reason="the Triton interpreter has no bfloat16")
def test_kernel_bf16():
    inputs = _inputs(2, 8, 300, 128, torch.bfloat16)
    keep = _key_mask(2, 300)
    ref = rel_pos_attention_ref(*(z.float() for z in inputs), mask=keep[:, None, None, :])
    assert_close(rel_pos_attention(*inputs, key_mask=keep), ref, atol=_tolerance(*inputs))


def test_kernel_strided_inputs_and_2d_biases():
    """q/k/v as (B, T, H, D) transposed (what split_heads returns), biases (H, D), a strided key mask."""
    b, h, t, d = 2, 2, 19, 64
    q, k, v = (torch.randn(b, t, h, d, device=DEVICE).transpose(1, 2) for _ in range(3))
    pos = torch.randn(1, 2 * t - 1, h, d, device=DEVICE)[0].transpose(0, 1)
    u, vb = torch.randn(h, d, device=DEVICE), torch.randn(h, d, device=DEVICE)
    keep = (torch.arange(t + 4, device=DEVICE)[None] < torch.tensor([[t], [5]], device=DEVICE))[:, :t]
    out = rel_pos_attention(q, k, v, pos, u, vb, key_mask=keep)
    ref = rel_pos_attention_ref(q, k, v, pos, u[:, None], vb[:, None], mask=keep[:, None, None, :])
    assert_close(out, ref, atol=_tolerance(q, k, v, pos, u, vb), what="strided")


def test_large_scores_rescale():
    """Scores that grow along the keys move the running max every block (the online-softmax rescale)."""
    q, k, v, pos, u, vb = _inputs(1, 2, 40, 64)
    pos = pos + 0.2 * torch.arange(79, device=DEVICE)[None, :, None] * (q[0, :, :1] + vb)
    out = rel_pos_attention(3 * q, k, v, pos, u, vb)
    expected = rel_pos_attention_ref(3 * q, k, v, pos, u, vb)
    assert_close(out, expected, atol=_tolerance(3 * q, k, v, pos, u, vb), what="growing scores")


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(pos=(2, 9, 16)), r"pos must be \(2, 11, 16\)"),
        (dict(k=(2, 2, 5, 16)), "share one"),
        (dict(bias_u=(3, 1, 16)), "bias_u must be"),
    ],
)
def test_bad_shapes(change, match):
    shapes = (
        dict(q=(2, 2, 6, 16), k=(2, 2, 6, 16), v=(2, 2, 6, 16), pos=(2, 11, 16), bias_u=(2, 1, 16), bias_v=(2, 1, 16))
        | change
    )
    args = [torch.zeros(shapes[n], device=DEVICE) for n in ("q", "k", "v", "pos", "bias_u", "bias_v")]
    with pytest.raises(ValueError, match=match):
        rel_pos_attention(*args)
    with pytest.raises(ValueError, match="key_mask must be a bool"):
        rel_pos_attention(*_inputs(2, 2, 6, 16), key_mask=torch.ones(2, 5, dtype=torch.bool, device=DEVICE))
