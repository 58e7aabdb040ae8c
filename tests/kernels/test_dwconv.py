"""polyasr.kernels.dwconv: the fused Conformer conv-module middle (GLU -> mask -> depthwise conv ->
[LayerNorm] -> SiLU) against its plain-torch reference, and the reference against the torch
backend's unfused op sequence (bit for bit: the CPU path did not change)."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close, rounded_output_tolerance

from polyasr.backends.torch import TorchBackend
from polyasr.kernels.dwconv import dwconv_glu_silu, dwconv_glu_silu_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(batch, t, c, k, dtype=torch.float32, ln=False, ragged=True):
    x = torch.randn(batch, t, 2 * c, device=DEVICE)
    w = 0.3 * torch.randn(c, k, device=DEVICE)
    b = torch.randn(c, device=DEVICE)
    lengths = torch.tensor([t, max(1, t // 2), max(1, t - 1)][:batch], device=DEVICE)
    keep = torch.arange(t, device=DEVICE)[None] < lengths[:, None] if ragged else None
    norm = (1 + 0.1 * torch.randn(c, device=DEVICE), 0.1 * torch.randn(c, device=DEVICE)) if ln else None
    cast = (lambda z: z.to(dtype)) if dtype != torch.float32 else (lambda z: z)
    return cast(x), cast(w), cast(b), keep, None if norm is None else tuple(cast(z) for z in norm)


def _check(x, w, b, keep, ln, what):
    out = dwconv_glu_silu(x, w, b, keep, ln)
    assert out.dtype == x.dtype and out.shape == (x.shape[0], x.shape[1], x.shape[2] // 2)
    f32 = lambda z: None if z is None else z.float()
    ref = dwconv_glu_silu_ref(x.float(), w.float(), f32(b), keep, None if ln is None else tuple(map(f32, ln)))
    # K taps per output, then (with LayerNorm) a mean and variance over C channels; the terms are the
    # conv's products |w| |glu(x)|, bounded by the pre-activation's magnitude
    c, k = w.shape
    pre = dwconv_glu_silu_ref(x.float(), w.float().abs(), None if b is None else b.float().abs(), keep, None)
    m = max(ref.abs().max().item(), pre.abs().max().item())
    tol = rounded_output_tolerance(magnitude=m, reduction=max(k, c if ln is not None else 1), dtype=x.dtype)
    assert_close(out, ref, atol=tol, what=what)
    return out


# (B, T, C, K, layer_norm): lengths 1 .. 70 (tails of the 16-frame blocks), K 5 / 9 / 31 wider than
# T (every tap reaches past both ends), C below / above / between the 64-channel blocks.
SWEEP = [
    (2, 1, 8, 9, False),
    (3, 7, 24, 9, False),
    (2, 33, 80, 9, False),
    (2, 70, 16, 9, True),
    (1, 20, 16, 31, False),
    (3, 17, 48, 5, True),
    (2, 5, 8, 31, True),
    (1, 64, 130, 9, False),
]


@pytest.mark.parametrize("batch,t,c,k,ln", SWEEP, ids=lambda v: str(v))
def test_kernel_fp32(batch, t, c, k, ln):
    _check(*_inputs(batch, t, c, k, ln=ln), what=f"fp32 B{batch} T{t} C{c} K{k} ln={ln}")


@pytest.mark.parametrize("batch,t,c,k,ln", [(2, 33, 80, 9, False), (3, 17, 48, 5, True)])
def test_kernel_fp16(batch, t, c, k, ln):
    _check(*_inputs(batch, t, c, k, torch.float16, ln=ln), what="fp16")


@pytest.mark.skipif(DEVICE == "cpu", reason="the Triton interpreter has no bfloat16")
def test_kernel_bf16():
    _check(*_inputs(2, 100, 256, 31, torch.bfloat16, ln=True), what="bf16")


def test_no_mask_no_bias_and_strided_input():
    x, w, _, _, _ = _inputs(2, 19, 24, 9, ragged=False)
    wide = torch.randn(2, 19, 2 * 24 + 5, device=DEVICE)
    wide[..., 3 : 3 + 48] = x
    _check(wide[..., 3 : 3 + 48], w, None, None, None, what="strided x, no bias, no mask")


def test_padded_frames_never_leak():
    """NaN / Inf in padded frames (what an uninitialised buffer may hold) do not reach valid frames."""
    x, w, b, keep, ln = _inputs(3, 21, 16, 9, ln=True)
    x[~keep] = float("nan")
    assert not keep[1, -1]
    x[1, -1, ::2] = float("inf")
    out = _check(x, w, b, keep, ln, what="NaN in padding")
    assert torch.isfinite(out[keep]).all()


@pytest.mark.parametrize("ln", [False, True])
def test_ref_is_the_backend_torch_path_bit_for_bit(ln):
    """The reference is the unfused sequence the models ran before: glu, zero_masked, depthwise_conv1d,
    (layer_norm), silu through the torch backend's own ops."""
    x, w, b, keep, norm = _inputs(3, 40, 32, 9, ln=ln)
    B = TorchBackend("cpu", kernels="torch")
    y = B.zero_masked(B.glu(x.cpu()), keep.cpu()[:, :, None])
    y = B.depthwise_conv1d(y, w.cpu(), b.cpu(), padding=4)
    if ln:
        y = B.layer_norm(y, norm[0].cpu(), norm[1].cpu())
    expected = B.silu(y)
    norm_cpu = None if norm is None else tuple(z.cpu() for z in norm)
    assert torch.equal(dwconv_glu_silu_ref(x.cpu(), w.cpu(), b.cpu(), keep.cpu(), norm_cpu), expected)
    assert torch.equal(B.glu_dwconv_silu(x.cpu(), w.cpu(), b.cpu(), keep.cpu(), norm_cpu), expected)


@pytest.mark.parametrize(
    "args,match",
    [
        (dict(x=(2, 5, 7)), r"\(B, T, 2C\)"),
        (dict(w=(4, 4)), "K odd"),
        (dict(b=(3,)), r"b must be \(4,\)"),
        (dict(keep=(2, 6)), "keep must be a bool"),
    ],
)
def test_bad_shapes(args, match):
    shapes = dict(x=(2, 5, 8), w=(4, 3), b=(4,), keep=(2, 5)) | args
    x, w, b = (torch.zeros(shapes[n], device=DEVICE) for n in ("x", "w", "b"))
    keep = torch.ones(shapes["keep"], dtype=torch.bool, device=DEVICE)
    with pytest.raises(ValueError, match=match):
        dwconv_glu_silu(x, w, b, keep)
