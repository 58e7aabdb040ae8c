"""The middle of a Conformer convolution module in one pass: GLU, padding mask, depthwise conv, norm, SiLU.

For ``x`` (B, T, 2C) — the output of the first pointwise conv, channels-last — a depthwise
kernel ``w`` (C, K) with K odd, a bias ``b`` (C,) (BatchNorm folded in at load, as the models
do), and optionally a LayerNorm (gamma, beta) over C:

    g[b,t,c] = x[b,t,c] * sigmoid(x[b,t,C+c])                   GLU over channels
    g[b,t,c] = 0 where keep[b,t] is False                        padded frames read as zeros
    y[b,t,c] = b[c] + sum_j w[c,j] g[b, t+j-(K-1)/2, c]          'same' padding: zeros past 0 and T-1
    y        = LayerNorm_C(y) * gamma + beta                     (GigaAM v3's conv_norm_type layer_norm)
    out      = y * sigmoid(y)                                    SiLU, (B, T, C) in x's dtype

(Gulati et al., Conformer (2020), fig. 2; NeMo's ``ConformerConvolution``; GigaAM's
``ConformerConvolution``). The unfused path reads and writes (B, T, C) four to five times
(GLU, mask, conv, norm, SiLU); the kernel reads x once per tap from cache and writes the
output once. Each program owns BLOCK_T frames x BLOCK_C channels of one item and recomputes
the GLU for each of the K taps (cheap next to the memory traffic it saves); with LayerNorm,
BLOCK_C covers all C so the statistics stay in registers. Everything is computed in fp32.

``dwconv_glu_silu_ref`` is the plain-torch spec (the torch backend's path, in the inputs'
dtype); ``dwconv_glu_silu`` launches the Triton kernel (CUDA tensors, or CPU tensors when
``TRITON_INTERPRET=1`` was set before this import).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from polyasr.kernels._triton import check_launchable, interpreting, tl, triton

_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_LN_CHANNELS = 4096  # one program holds a whole row for the LayerNorm statistics


# ---- kernel -------------------------------------------------------------------------------------


@triton.jit
def _dwconv_glu_silu_fwd_kernel(
    X_ptr,
    W_ptr,
    B_ptr,
    KEEP_ptr,
    LNW_ptr,
    LNB_ptr,
    O_ptr,
    stride_xb,
    stride_xt,
    stride_xc,
    stride_wc,
    stride_wk,
    stride_kb,
    stride_kt,
    stride_ob,
    stride_ot,
    stride_oc,
    T,
    C,
    eps,
    KSIZE: tl.constexpr,
    HAS_KEEP: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_LN: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """One program: BLOCK_T frames x BLOCK_C channels of one item. Grid (cdiv(T, BLOCK_T), cdiv(C, BLOCK_C), B)."""
    PAD: tl.constexpr = (KSIZE - 1) // 2
    b = tl.program_id(2).to(tl.int64)
    offs_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = offs_c < C
    x_base = X_ptr + b * stride_xb + offs_c[None, :] * stride_xc
    acc = tl.zeros([BLOCK_T, BLOCK_C], dtype=tl.float32)
    for j in tl.static_range(KSIZE):
        src = offs_t + (j - PAD)
        ok = (src >= 0) & (src < T)
        if HAS_KEEP:
            ok = ok & (tl.load(KEEP_ptr + b * stride_kb + src * stride_kt, mask=ok, other=0) != 0)
        m = ok[:, None] & c_ok[None, :]
        ptrs = x_base + src[:, None] * stride_xt
        a = tl.load(ptrs, mask=m, other=0.0).to(tl.float32)
        gate = tl.load(ptrs + C * stride_xc, mask=m, other=0.0).to(tl.float32)
        glu = tl.where(m, a * tl.sigmoid(gate), 0.0)  # masked frames are exactly 0, whatever x holds
        w = tl.load(W_ptr + offs_c * stride_wc + j * stride_wk, mask=c_ok, other=0.0).to(tl.float32)
        acc += glu * w[None, :]
    if HAS_BIAS:
        acc += tl.load(B_ptr + offs_c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_LN:  # BLOCK_C >= C: the whole row is here
        mean = tl.sum(tl.where(c_ok[None, :], acc, 0.0), 1) / C
        diff = tl.where(c_ok[None, :], acc - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(diff * diff, 1) / C + eps)
        gamma = tl.load(LNW_ptr + offs_c, mask=c_ok, other=0.0).to(tl.float32)
        beta = tl.load(LNB_ptr + offs_c, mask=c_ok, other=0.0).to(tl.float32)
        acc = diff * rstd[:, None] * gamma[None, :] + beta[None, :]
    out = acc * tl.sigmoid(acc)
    o_ptrs = O_ptr + b * stride_ob + offs_t[:, None] * stride_ot + offs_c[None, :] * stride_oc
    tl.store(o_ptrs, out.to(O_ptr.dtype.element_ty), mask=(offs_t < T)[:, None] & c_ok[None, :])


# ---- reference ----------------------------------------------------------------------------------


def depthwise_conv1d_ref(x, w, b=None, padding: int = 0):
    """Depthwise conv over time, channels-last in and out: x (B, T, C), w (C, K), b (C,) or None -> (B, T', C).

    A (B, T, C) tensor seen as (B, C, 1, T) is already in conv2d's channels-last layout, so the
    convolution runs on it in place and writes (B, T', C) rows: no transposed copy on either side
    (conv1d would copy x to (B, C, T) and leave a transposed output for the next op to copy).
    """
    y = F.conv2d(x.transpose(1, 2)[:, :, None], w[:, None, None, :], b, padding=(0, padding), groups=w.shape[0])
    return y[:, :, 0].transpose(1, 2)


def dwconv_glu_silu_ref(x, w, b=None, keep=None, ln=None, eps: float = 1e-5):
    """The spec in plain torch, in the inputs' dtype: x (B, T, 2C), w (C, K), b (C,) or None,
    keep (B, T) bool or None, ln (gamma, beta) or None -> (B, T, C).

    The exact op sequence of the torch backend (glu, zero_masked, depthwise_conv1d, layer_norm, silu).
    """
    y = F.glu(x, dim=-1)
    if keep is not None:
        y = y.masked_fill(~keep[:, :, None], 0.0)
    y = depthwise_conv1d_ref(y, w, b, (w.shape[1] - 1) // 2)
    if ln is not None:
        y = F.layer_norm(y, (y.shape[-1],), ln[0], ln[1], eps)
    return F.silu(y)


# ---- launcher -----------------------------------------------------------------------------------


def _check(x, w, b, keep, ln) -> None:
    if x.ndim != 3 or x.shape[2] % 2:
        raise ValueError(f"dwconv_glu_silu: x must be (B, T, 2C), got {tuple(x.shape)}")
    batch, t, c = x.shape[0], x.shape[1], x.shape[2] // 2
    if w.ndim != 2 or w.shape[0] != c or w.shape[1] % 2 == 0:
        raise ValueError(f"dwconv_glu_silu: w must be ({c}, K) with K odd, got {tuple(w.shape)}")
    if b is not None and b.shape != (c,):
        raise ValueError(f"dwconv_glu_silu: b must be ({c},), got {tuple(b.shape)}")
    if keep is not None and (keep.dtype != torch.bool or keep.shape != (batch, t)):
        raise ValueError(
            f"dwconv_glu_silu: keep must be a bool ({batch}, {t}) tensor, got {keep.dtype} {tuple(keep.shape)}"
        )
    if ln is not None and (len(ln) != 2 or ln[0].shape != (c,) or ln[1].shape != (c,) or c > _MAX_LN_CHANNELS):
        raise ValueError(f"dwconv_glu_silu: ln must be (gamma, beta) of shape ({c},), C <= {_MAX_LN_CHANNELS}")
    if x.dtype not in _KERNEL_DTYPES:
        raise ValueError(f"dwconv_glu_silu: x must be one of {_KERNEL_DTYPES}, got {x.dtype}")
    check_launchable("dwconv_glu_silu", x)


def _pick_config(c: int, has_ln: bool, interpret: bool) -> dict:
    """Fixed blocks (no autotune). GPU choices are first guesses, not yet timed on a GPU."""
    full = triton.next_power_of_2(c)
    if interpret:
        return dict(BLOCK_T=16, BLOCK_C=full if has_ln else min(full, 64))
    if has_ln:
        return dict(BLOCK_T=max(1, min(16, 8192 // full)), BLOCK_C=full, num_warps=8 if full >= 1024 else 4)
    return dict(BLOCK_T=32, BLOCK_C=min(full, 128), num_warps=4)


def dwconv_glu_silu(x, w, b=None, keep=None, ln=None, eps: float = 1e-5):
    """Fused GLU -> mask -> depthwise conv ('same') -> [LayerNorm] -> SiLU: x (B, T, 2C) -> (B, T, C) in x's dtype.

    Arguments as ``dwconv_glu_silu_ref``; any strides; no host sync.
    """
    _check(x, w, b, keep, ln)
    batch, t, c = x.shape[0], x.shape[1], x.shape[2] // 2
    out = torch.empty(batch, t, c, dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    kmask = keep.to(x.device).view(torch.uint8) if keep is not None else out  # out: never read
    b = b.contiguous() if b is not None else None  # the kernel indexes bias and norm vectors densely
    ln = (ln[0].contiguous(), ln[1].contiguous()) if ln is not None else None
    cfg = _pick_config(c, ln is not None, interpreting())
    grid = (triton.cdiv(t, cfg["BLOCK_T"]), triton.cdiv(c, cfg["BLOCK_C"]), batch)
    _dwconv_glu_silu_fwd_kernel[grid](
        x,
        w,
        b if b is not None else out,
        kmask,
        *(ln if ln is not None else (out, out)),
        out,
        *x.stride(),
        *w.stride(),
        *(kmask.stride() if keep is not None else (0, 0)),
        *out.stride(),
        t,
        c,
        float(eps),
        KSIZE=w.shape[1],
        HAS_KEEP=keep is not None,
        HAS_BIAS=b is not None,
        HAS_LN=ln is not None,
        **cfg,
    )
    return out
