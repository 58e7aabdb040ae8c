"""Transformer-XL relative-position self-attention, forward only (Parakeet's FastConformer).

For q, k, v (B, H, T, D), projected relative encodings ``pos`` (H, 2T-1, D) of the distances
T-1, T-2, ..., -(T-1) (row r is distance T-1-r), and per-head biases ``u``, ``v_b`` (H, D):

    S[b,h,i,j] = scale * ((q_i + u) . k_j  +  (q_i + v_b) . pos[h, T-1-i+j])     scale = 1 / sqrt(D)
    O[b,h,i,:] = softmax_j(S[b,h,i,j] over the keys j with key_mask[b, j]) @ v

(Dai et al., Transformer-XL (2019), sec. 3.3: terms (a)+(c) are the content term with u,
(b)+(d) the position term with v; NeMo's ``RelPositionMultiHeadAttention``). The references
form the position term for all 2T-1 distances, (T, 2T-1), and move it into place with a
pad-and-reshape "relative shift"; the kernel never forms it. Each program owns BLOCK_M
query rows of one (b, h) and streams BLOCK_N keys at a time through an online softmax
(running max, running sum, fp32 accumulator, exp2). For a (BLOCK_M, BLOCK_N) tile starting at
(m0, n0) the distances needed, T-1-i+j, form a band of BLOCK_M + BLOCK_N - 1 consecutive rows of
``pos`` starting at r0 = T-1-(m0+BLOCK_M-1)+n0, so the kernel computes

    band = (q + v_b)[m0:m0+BLOCK_M] @ pos[r0 : r0 + BLOCK_M + BLOCK_N]^T      (BLOCK_M, BLOCK_M + BLOCK_N)

on the tensor cores and picks element [ii, BLOCK_M-1-ii+jj] of row ii for key jj with
``tl.gather`` — the relative shift done by index arithmetic, in registers. That costs twice
the flops of the ideal position term, still O(T^2 D) and no (T, T) or (T, 2T-1) matrix in memory.

Rows whose every key is masked out are zero (the reference gives NaN there: the torch
backend's masks always keep at least one key per item).

``rel_pos_attention_ref`` is the plain-torch spec (the torch backend's CPU path, in blocks of queries
there); ``rel_pos_attention`` launches the Triton kernel (CUDA
tensors, or CPU tensors when ``TRITON_INTERPRET=1`` was set before this import).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from polyasr.kernels._triton import check_launchable, interpreting, tl, triton

_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_HEAD_DIM = 256
_LOG2E = 1.4426950408889634
_M_INIT = tl.constexpr(-1.0e30)  # finite start of the running max: exp2(-inf - m) is 0, never NaN


# ---- kernel -------------------------------------------------------------------------------------


@triton.jit
def _relpos_inner(
    acc,
    l_i,
    m_i,
    qu,
    qv,
    k_ptrs,
    v_ptrs,
    p_base,
    km_ptr,
    stride_kn,
    stride_vn,
    stride_pr,
    stride_pd,
    stride_kmn,
    offs_n,
    offs_d,
    d_ok,
    m0,
    T,
    qk_scale,
    HAS_KEY_MASK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Online softmax over every key block; returns the updated (acc, l_i, m_i)."""
    BAND: tl.constexpr = BLOCK_M + BLOCK_N
    offs_band = tl.arange(0, BAND)
    # Position-band column of (row ii, key jj): BLOCK_M - 1 - ii + jj, in 0 .. BAND - 2.
    shift = (BLOCK_M - 1 - tl.arange(0, BLOCK_M))[:, None] + offs_n[None, :]
    for n0 in range(0, T, BLOCK_N):
        cols = n0 + offs_n
        cols_ok = cols < T
        k = tl.load(k_ptrs + n0 * stride_kn, mask=d_ok[:, None] & cols_ok[None, :], other=0.0)  # (D, N)
        content = tl.dot(qu, k, input_precision=DOT_PRECISION)
        rows = T - 1 - (m0 + BLOCK_M - 1) + n0 + offs_band  # distances' rows in pos, (BAND,)
        p_ok = (rows >= 0) & (rows < 2 * T - 1)
        p = tl.load(
            p_base + rows[None, :] * stride_pr + offs_d[:, None] * stride_pd,
            mask=d_ok[:, None] & p_ok[None, :],
            other=0.0,
        )  # (D, BAND): pos rows transposed
        band = tl.dot(qv, p, input_precision=DOT_PRECISION)  # (M, BAND)
        qk = (content + tl.gather(band, shift, axis=1)) * qk_scale  # log2-domain scores
        keep = cols_ok[None, :]
        if HAS_KEY_MASK:
            keep = keep & (tl.load(km_ptr + cols * stride_kmn, mask=cols_ok, other=0) != 0)[None, :]
        qk = tl.where(keep, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        prob = tl.math.exp2(qk - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(prob, 1)
        v = tl.load(v_ptrs + n0 * stride_vn, mask=cols_ok[:, None] & d_ok[None, :], other=0.0)  # (N, D)
        acc = tl.dot(prob.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _rel_pos_attention_fwd_kernel(
    Q_ptr,
    K_ptr,
    V_ptr,
    P_ptr,
    BU_ptr,
    BV_ptr,
    O_ptr,
    KMASK_ptr,
    stride_qb,
    stride_qh,
    stride_qm,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_kd,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_vd,
    stride_ob,
    stride_oh,
    stride_om,
    stride_od,
    stride_ph,
    stride_pr,
    stride_pd,
    stride_bh,
    stride_bd,
    stride_kmb,
    stride_kmn,
    H,
    T,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    HAS_KEY_MASK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """One program: BLOCK_M query rows of one (batch, head). Grid (cdiv(T, BLOCK_M), B * H)."""
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    m0 = start_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    rows_ok = offs_m < T

    q = tl.load(
        Q_ptr + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
        mask=rows_ok[:, None] & d_ok[None, :],
        other=0.0,
    )
    bias_u = tl.load(BU_ptr + h * stride_bh + offs_d * stride_bd, mask=d_ok, other=0.0).to(tl.float32)
    bias_v = tl.load(BV_ptr + h * stride_bh + offs_d * stride_bd, mask=d_ok, other=0.0).to(tl.float32)
    qu = (q.to(tl.float32) + bias_u[None, :]).to(q.dtype)  # rounded to the input dtype, as the reference
    qv = (q.to(tl.float32) + bias_v[None, :]).to(q.dtype)
    k_ptrs = K_ptr + b * stride_kb + h * stride_kh + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd
    v_ptrs = V_ptr + b * stride_vb + h * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd

    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], _M_INIT, dtype=tl.float32)
    acc, l_i, m_i = _relpos_inner(
        acc,
        l_i,
        m_i,
        qu,
        qv,
        k_ptrs,
        v_ptrs,
        P_ptr + h * stride_ph,
        KMASK_ptr + b * stride_kmb,
        stride_kn,
        stride_vn,
        stride_pr,
        stride_pd,
        stride_kmn,
        offs_n,
        offs_d,
        d_ok,
        m0,
        T,
        qk_scale,
        HAS_KEY_MASK,
        DOT_PRECISION,
        BLOCK_M,
        BLOCK_N,
    )
    out = (acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]).to(O_ptr.dtype.element_ty)
    o_ptrs = O_ptr + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out, mask=rows_ok[:, None] & d_ok[None, :])


# ---- reference ----------------------------------------------------------------------------------


def rel_pos_attention_ref(q, k, v, pos, bias_u, bias_v, *, mask=None, rows=None):
    """The spec in plain torch, in the inputs' dtype (pass fp32 for the fp32 reference).

    q, k, v: (B, H, T, D); pos: (H, 2T-1, D), the projected embeddings of distances T-1 .. -(T-1);
    bias_u, bias_v: (H, 1, D); mask: bool (B, 1, 1, T), True on valid keys, or None.
    scores[i, j] = ((q_i + u) . k_j + (q_i + v) . pos[T-1-i+j]) / sqrt(D) -> softmax -> @ v.
    The positional term is computed for the distances the queries need and shifted into place by
    a strided view (element [i, j] of the shifted matrix is [i, T-1-i+j] of the full one), which
    is the pad-and-reshape `rel_shift` of the references without its copies.

    rows: queries per block (None: all T at once). A block of n queries needs T + n - 1 of the
    distances, so its (B, H, n, T + n - 1) positional term stays small: the CPU path bounds it
    (`backends/torch.py`), and the whole-T product is twice the attention matrix.
    """
    b, h, t, d = q.shape
    # the scale goes on (q + v), (B, H, T, D), rather than on the (B, H, T, T) scores
    qv, qu = (q + bias_v).mul_(d**-0.5), q + bias_u
    out = []
    for i0 in range(0, t, rows or t):
        n = min(t, i0 + (rows or t)) - i0
        w = t + n - 1  # pos rows T-1-i+j for the block's i and every j < T: T-i0-n .. 2T-2-i0
        full = torch.matmul(qv[:, :, i0 : i0 + n], pos[:, t - i0 - n : 2 * t - 1 - i0].transpose(-1, -2)).contiguous()
        bd = full.as_strided((b, h, n, t), (h * n * w, n * w, w - 1, 1), full.storage_offset() + n - 1)
        # one pass writes the shifted scores out, masked or not (SDPA wants them dense)
        bd = bd.contiguous() if mask is None else bd.masked_fill(~mask, -torch.inf)
        out.append(F.scaled_dot_product_attention(qu[:, :, i0 : i0 + n], k, v, attn_mask=bd))
    return out[0] if len(out) == 1 else torch.cat(out, dim=2)


# ---- launcher -----------------------------------------------------------------------------------


def _check(q, k, v, pos, bias_u, bias_v, key_mask) -> None:
    if q.ndim != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            f"rel_pos_attention: q, k, v must share one (B, H, T, D) shape, got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    batch, heads, t, d = q.shape
    if pos.shape != (heads, 2 * t - 1, d):
        raise ValueError(f"rel_pos_attention: pos must be ({heads}, {2 * t - 1}, {d}), got {tuple(pos.shape)}")
    for name, bias in (("bias_u", bias_u), ("bias_v", bias_v)):
        if bias.numel() != heads * d or bias.shape[0] != heads or bias.shape[-1] != d:
            raise ValueError(
                f"rel_pos_attention: {name} must be ({heads}, 1, {d}) or ({heads}, {d}), got {tuple(bias.shape)}"
            )
    if key_mask is not None and (key_mask.dtype != torch.bool or key_mask.shape != (batch, t)):
        raise ValueError(
            f"rel_pos_attention: key_mask must be a bool ({batch}, {t}) tensor, "
            f"got {key_mask.dtype} {tuple(key_mask.shape)}"
        )
    if len({x.dtype for x in (q, k, v, pos)}) != 1 or q.dtype not in _KERNEL_DTYPES:
        raise ValueError(
            f"rel_pos_attention: q, k, v, pos must share one of {_KERNEL_DTYPES}, "
            f"got {q.dtype}, {k.dtype}, {v.dtype}, {pos.dtype}"
        )
    if not 1 <= d <= _MAX_HEAD_DIM:
        raise ValueError(f"rel_pos_attention: head dim {d} must lie in 1..{_MAX_HEAD_DIM}")
    check_launchable("rel_pos_attention", q)


def _pick_config(head_dim: int, dtype: torch.dtype, interpret: bool) -> dict:
    """Fixed blocks (no autotune). The position band doubles the score tile, hence smaller tiles than
    plain attention's; GPU choices are first guesses, not yet compiled or timed on a GPU."""
    block_d = max(16, triton.next_power_of_2(head_dim))
    if interpret:
        return dict(BLOCK_M=16, BLOCK_N=16, BLOCK_D=block_d)
    if dtype == torch.float32 or block_d > 128:
        return dict(BLOCK_M=32, BLOCK_N=32, BLOCK_D=block_d, num_warps=4, num_stages=2)
    return dict(BLOCK_M=64, BLOCK_N=64, BLOCK_D=block_d, num_warps=4, num_stages=2)


def rel_pos_attention(q, k, v, pos, bias_u, bias_v, *, key_mask=None, scale: float | None = None):
    """Fused Transformer-XL attention: shapes as ``rel_pos_attention_ref``, -> (B, H, T, D) in q's dtype.

    ``key_mask`` (B, T) bool, True = keep (any strides), instead of the reference's (B, 1, 1, T)
    mask; ``scale`` defaults to 1 / sqrt(D). Biases may be (H, 1, D) or (H, D) in any float dtype.
    """
    _check(q, k, v, pos, bias_u, bias_v, key_mask)
    batch, heads, t, d = q.shape
    q, k, v, pos = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v, pos))
    bias_u, bias_v = bias_u.reshape(heads, d), bias_v.reshape(heads, d)
    if bias_u.stride() != bias_v.stride():
        bias_u, bias_v = bias_u.contiguous(), bias_v.contiguous()
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    if out.numel() == 0:
        return out
    kmask = key_mask.to(q.device).view(torch.uint8) if key_mask is not None else out  # out: never read
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    cfg = _pick_config(d, q.dtype, interpreting())
    grid = (triton.cdiv(t, cfg["BLOCK_M"]), batch * heads)
    _rel_pos_attention_fwd_kernel[grid](
        q,
        k,
        v,
        pos,
        bias_u,
        bias_v,
        out,
        kmask,
        *q.stride(),
        *k.stride(),
        *v.stride(),
        *out.stride(),
        *pos.stride(),
        *bias_u.stride(),
        *(kmask.stride() if key_mask is not None else (0, 0)),
        heads,
        t,
        scale * _LOG2E,
        HEAD_DIM=d,
        HAS_KEY_MASK=key_mask is not None,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        **cfg,
    )
    return out
