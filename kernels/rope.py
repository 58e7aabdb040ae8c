"""Rotary position embedding, optionally after a per-head RMSNorm, in one pass (Qwen3's q/k norm fused
with the rotation).

For ``x`` with heads of D channels — (B, H, T, D), or channels-last (B, T, H*D) before the heads
are split — tables ``cos``, ``sin`` of D channels per position in the rotate-half layout (shared
(T, D), or per row (B, 1, T, D) for left-padded batches), and an optional RMSNorm weight ``w`` (D,):

    y        = x / sqrt(mean_D(x^2) + eps) * w              per head, statistic in fp32 (Qwen3's q/k norm)
    out[:h]  = y[:h] * cos[:h] - y[h:] * sin[:h]            h = D / 2
    out[h:]  = y[h:] * cos[h:] + y[:h] * sin[h:]            (Su et al., RoFormer (2021), eq. 34, rotate-half form)

(GigaAM rotates the layer input before its q/k projection, no norm; Qwen3 normalises each q and k
head, then rotates.) Unfused, each step reads and writes the whole tensor (square, mean, rsqrt,
two multiplies, two half-slices, a concatenation, two more multiplies and an add); the kernel
reads x and the tables once and writes the result once. One program owns BLOCK_T positions of one
head of one item and holds both halves of each head vector in registers, so the norm's statistic
needs no second pass. Computed in fp32, written in x's dtype.

``rope_ref`` is the plain-torch spec (the torch backend's path, in the inputs' dtype); ``rope``
launches the kernel (CUDA tensors, or CPU tensors when ``TRITON_INTERPRET=1`` was set before this
import).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from polyasr.kernels._triton import check_launchable, interpreting, tl, triton

_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# ---- kernel -------------------------------------------------------------------------------------


@triton.jit
def _rope_fwd_kernel(
    X_ptr,
    COS_ptr,
    SIN_ptr,
    W_ptr,
    O_ptr,
    stride_xb,
    stride_xh,
    stride_xt,
    stride_cb,
    stride_ct,
    stride_ob,
    stride_oh,
    stride_ot,
    T,
    eps,
    HALF: tl.constexpr,
    HAS_NORM: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """One program: BLOCK_T positions of one head of one item. Grid (cdiv(T, BLOCK_T), H, B)."""
    b, h = tl.program_id(2).to(tl.int64), tl.program_id(1).to(tl.int64)
    offs_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_H)
    m = (offs_t[:, None] < T) & (offs_d[None, :] < HALF)
    x_row = X_ptr + b * stride_xb + h * stride_xh + offs_t[:, None] * stride_xt + offs_d[None, :]
    x1 = tl.load(x_row, mask=m, other=0.0).to(tl.float32)
    x2 = tl.load(x_row + HALF, mask=m, other=0.0).to(tl.float32)
    if HAS_NORM:
        ms = (tl.sum(x1 * x1, axis=1) + tl.sum(x2 * x2, axis=1)) / (2 * HALF)
        r = 1.0 / tl.sqrt(ms + eps)
        w_ok = offs_d < HALF
        w1 = tl.load(W_ptr + offs_d, mask=w_ok, other=0.0).to(tl.float32)
        w2 = tl.load(W_ptr + HALF + offs_d, mask=w_ok, other=0.0).to(tl.float32)
        x1 = x1 * r[:, None] * w1[None, :]
        x2 = x2 * r[:, None] * w2[None, :]
    t_row = b * stride_cb + offs_t[:, None] * stride_ct + offs_d[None, :]
    c1 = tl.load(COS_ptr + t_row, mask=m, other=0.0).to(tl.float32)
    c2 = tl.load(COS_ptr + t_row + HALF, mask=m, other=0.0).to(tl.float32)
    s1 = tl.load(SIN_ptr + t_row, mask=m, other=0.0).to(tl.float32)
    s2 = tl.load(SIN_ptr + t_row + HALF, mask=m, other=0.0).to(tl.float32)
    o_row = O_ptr + b * stride_ob + h * stride_oh + offs_t[:, None] * stride_ot + offs_d[None, :]
    tl.store(o_row, (x1 * c1 - x2 * s1).to(O_ptr.dtype.element_ty), mask=m)
    tl.store(o_row + HALF, (x2 * c2 + x1 * s2).to(O_ptr.dtype.element_ty), mask=m)


# ---- reference ----------------------------------------------------------------------------------


def rope_ref(x, cos, sin, weight=None, eps: float = 1e-6):
    """The spec in plain torch, in x's dtype: (optional per-head RMSNorm with `weight`, statistic in
    fp32) then rotate-half RoPE. x (B, H, T, D) or (B, T, H*D); cos, sin (T, D) or (B, 1, T, D)."""
    d = cos.shape[-1]
    y = x.unflatten(-1, (-1, d)) if x.ndim == 3 else x  # (B, T, H, D) or (B, H, T, D)
    if weight is not None:
        if y.dtype == torch.float32:
            y = F.rms_norm(y, (d,), weight, eps)
        else:
            z = y.float()
            y = weight * (z * torch.rsqrt(z.square().mean(-1, keepdim=True) + eps)).to(y.dtype)
    c, s = (cos[:, None], sin[:, None]) if x.ndim == 3 else (cos, sin)
    y1, y2 = y[..., : d // 2], y[..., d // 2 :]
    out = y * c + torch.cat((-y2, y1), dim=-1) * s
    return out.flatten(-2) if x.ndim == 3 else out


# ---- launcher -----------------------------------------------------------------------------------


def _check(x, cos, sin, weight) -> None:
    d = cos.shape[-1]
    if x.ndim not in (3, 4) or x.shape[-1] % d or (x.ndim == 4 and x.shape[-1] != d) or d % 2:
        raise ValueError(
            f"rope: x must be (B, H, T, D) or (B, T, H*D) with an even D = cos.shape[-1] = {d}, got {tuple(x.shape)}"
        )
    t = x.shape[2] if x.ndim == 4 else x.shape[1]
    if cos.shape != sin.shape or cos.shape not in ((t, d), (x.shape[0], 1, t, d)):
        raise ValueError(
            f"rope: cos / sin must be ({t}, {d}) or ({x.shape[0]}, 1, {t}, {d}), "
            f"got {tuple(cos.shape)} / {tuple(sin.shape)}"
        )
    if weight is not None and tuple(weight.shape) != (d,):
        raise ValueError(f"rope: the norm weight must be ({d},), got {tuple(weight.shape)}")
    if x.dtype not in _KERNEL_DTYPES:
        raise ValueError(f"rope: x must be one of {_KERNEL_DTYPES}, got {x.dtype}")
    check_launchable("rope", x)


def rope(x, cos, sin, weight=None, eps: float = 1e-6):
    """As ``rope_ref``, in one kernel launch; returns a new contiguous tensor of x's shape and dtype."""
    _check(x, cos, sin, weight)
    d = cos.shape[-1]
    if x.ndim == 3:  # (B, T, H*D) seen as (B, H, T, D) through its strides
        batch, t, heads = x.shape[0], x.shape[1], x.shape[2] // d
        if x.stride(2) != 1:
            x = x.contiguous()
        xs = (x.stride(0), d, x.stride(1))
    else:
        batch, heads, t = x.shape[:3]
        if x.stride(3) != 1:
            x = x.contiguous()
        xs = (x.stride(0), x.stride(1), x.stride(2))
    out = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    os_ = (out.stride(0), d, out.stride(1)) if x.ndim == 3 else (out.stride(0), out.stride(1), out.stride(2))
    cos, sin = cos.contiguous(), sin.contiguous()
    cs = (0, cos.stride(0)) if cos.ndim == 2 else (cos.stride(0), cos.stride(2))
    if batch * heads * t == 0:
        return out
    block_t = min(triton.next_power_of_2(t), 16 if interpreting() else 32)
    _rope_fwd_kernel[(triton.cdiv(t, block_t), heads, batch)](
        x,
        cos,
        sin,
        weight if weight is not None else x,
        out,
        *xs,
        *cs,
        *os_,
        t,
        float(eps),
        HALF=d // 2,
        HAS_NORM=weight is not None,
        BLOCK_T=block_t,
        BLOCK_H=triton.next_power_of_2(d // 2),
    )
    return out
