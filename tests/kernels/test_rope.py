"""polyasr.kernels.rope: RoPE (and Qwen3's per-head RMSNorm before it) in one kernel, against its
plain-torch reference over head dims 64 / 80 / 128 and odd small ones, lengths 1 .. 70, both
layouts (heads split, and channels-last before the split), shared and per-row tables, fp32 and fp16;
and the reference against the torch backend's unfused ops (what the CPU path computes)."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close, rounded_output_tolerance

from polyasr.backends.torch import TorchBackend
from polyasr.kernels.rope import rope, rope_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
T_BACKEND = TorchBackend("cpu", "float32", kernels="torch")


def _tables(t, d, batch=None):
    cos, sin = T_BACKEND.rope_tables(t + 5, d, 10000.0)
    cos, sin = cos.to(DEVICE), sin.to(DEVICE)
    if batch is None:
        return cos[:t], sin[:t]
    pos = torch.stack([torch.arange(t) + i for i in range(batch)]).to(DEVICE)  # per-row offsets
    return cos[pos][:, None], sin[pos][:, None]


def _check(x, cos, sin, w, what):
    out = rope(x, cos, sin, w, 1e-6)
    assert out.dtype == x.dtype and out.shape == x.shape
    ref = rope_ref(x.float(), cos.float(), sin.float(), None if w is None else w.float(), 1e-6)
    # the RMS norm sums D squares; the rotation adds two products per element
    d = cos.shape[-1]
    tol = rounded_output_tolerance(magnitude=ref.abs().max().item(), reduction=d if w is not None else 2, dtype=x.dtype)
    assert_close(out, ref, atol=tol, what=what)


@pytest.mark.parametrize(
    "batch, heads, t, d", [(1, 1, 1, 64), (2, 3, 7, 80), (2, 2, 33, 128), (1, 4, 70, 8), (3, 1, 16, 6)]
)
@pytest.mark.parametrize("norm", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_heads_split_layout(batch, heads, t, d, norm, dtype):
    x = (3 * torch.randn(batch, heads, t, d, device=DEVICE)).to(dtype)
    w = (1 + 0.1 * torch.randn(d, device=DEVICE)).to(dtype) if norm else None
    _check(x, *_tables(t, d), w, f"(B, H, T, D) = {tuple(x.shape)}, norm={norm}")


@pytest.mark.parametrize("batch, heads, t, d", [(1, 2, 5, 64), (2, 4, 33, 16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_channels_last_layout_and_a_strided_input(batch, heads, t, d, dtype):
    x = torch.randn(batch, t, heads * d, device=DEVICE).to(dtype)
    _check(x, *_tables(t, d), None, "(B, T, H*D)")
    wide = torch.randn(batch, heads, t, 2 * d, device=DEVICE).to(dtype)[..., :d]  # rows not contiguous
    _check(wide, *_tables(t, d), None, "a sliced (B, H, T, D) view")
    split = torch.randn(batch, t, heads * d, device=DEVICE).to(dtype).view(batch, t, heads, d).transpose(1, 2)
    _check(split, *_tables(t, d), (1 + torch.randn(d, device=DEVICE)).to(dtype), "split_heads' transposed view")


@pytest.mark.parametrize("norm", [False, True])
def test_per_row_tables_of_left_padded_rows(norm):
    x = torch.randn(3, 2, 9, 64, device=DEVICE)
    w = 1 + 0.1 * torch.randn(64, device=DEVICE) if norm else None
    _check(x, *_tables(9, 64, batch=3), w, "(B, 1, T, D) tables")


def test_reference_is_rotation_by_complex_multiplication_and_the_backends_norm():
    """RoPE in rotate-half layout pairs channel j with j + D/2 as the complex number x_j + i x_(j+D/2)
    and multiplies it by exp(i theta_j t) (RoFormer eq. 34); the norm is the backend's rms_norm."""
    x, w = torch.randn(2, 3, 11, 64, dtype=torch.float64), 1 + 0.1 * torch.randn(64, dtype=torch.float64)
    cos, sin = (z.double() for z in T_BACKEND.rope_tables(11, 64, 1e6))
    z = torch.complex(x[..., :32], x[..., 32:]) * torch.complex(cos[:, :32], sin[:, :32])
    assert_close(rope_ref(x, cos, sin), torch.cat((z.real, z.imag), -1), 1e-12, what="rotation")
    x3 = x.transpose(1, 2).flatten(2)  # channels-last, heads not split
    assert_close(rope_ref(x3, cos, sin), rope_ref(x, cos, sin).transpose(1, 2).flatten(2), 1e-12, what="layouts")
    xf, wf, cf, sf = x.float(), w.float(), cos.float(), sin.float()
    assert torch.equal(rope_ref(xf, cf, sf, wf, 1e-6), rope_ref(T_BACKEND.rms_norm(xf, wf, 1e-6), cf, sf))


def test_bad_shapes_are_named():
    x = torch.randn(1, 2, 5, 64)
    cos, sin = _tables(5, 64)
    with pytest.raises(ValueError, match=r"cos / sin must be \(5, 64\)"):
        rope(x, cos[:4], sin[:4])
    with pytest.raises(ValueError, match=r"norm weight must be \(64,\)"):
        rope(x, cos, sin, torch.ones(32))
    with pytest.raises(ValueError, match="even D"):
        rope(torch.randn(1, 2, 5, 7), torch.ones(5, 7), torch.ones(5, 7))
