"""Scaled dot-product attention, forward only: one flash-attention kernel for every model.

For queries ``q`` (B, H, Tq, D) and keys / values ``k``, ``v`` (B, Hkv, Tk, D), with
``Hkv`` dividing ``H`` (grouped-query attention: query head ``h`` reads kv head
``h // (H // Hkv)``; ``Hkv == H`` is plain multi-head attention):

    S[b,h,i,j] = scale * sum_d q[b,h,i,d] k[b,g(h),j,d]      scale = 1 / sqrt(D) by default
    P[b,h,i,:] = softmax_j(S[b,h,i,j] over the keys j that row i may see)
    O[b,h,i,d] = sum_j P[b,h,i,j] v[b,g(h),j,d]              O: (B, H, Tq, D), q's dtype

Which keys row ``i`` of item ``b`` may see:

- ``kv_lengths`` (B,): key-padding mask for a batch of variable-length items, keys
  ``j < kv_lengths[b]`` (values are clamped to 0..Tk);
- ``key_mask`` (B, Tk) bool: any per-item set of keys, ``key_mask[b, j]`` True = keep (the
  torch backend's ``mask=`` of shape (B, 1, 1, Tk)); combines with the other two;
- ``causal``: the queries are the LAST Tq of the Tk positions, so row ``i`` sees keys
  ``j <= i + Tk - Tq`` (Tq == Tk is the usual triangle; Tq == 1 is one decode step against
  a KV cache). Both masks may be combined; the causal offset uses the full Tk, as
  ``TorchBackend.attention`` does when given a mask and ``causal``.

A row that may see no key at all (causal with Tq > Tk, or a zero length) is all zeros,
as torch's ``scaled_dot_product_attention`` returns for a fully masked row.

The kernel never forms the (Tq, Tk) matrix: each program owns BLOCK_M query rows of one
(b, h) and streams BLOCK_N keys at a time through the online softmax (a running max
``m``, a running sum ``l`` and the unnormalised output ``acc``, all fp32, rescaled by
``exp2(m_old - m_new)`` whenever the max grows), dividing by ``l`` once at the end. Key
blocks that every row of the program sees in full run without any masking; only the
blocks that cross the padding or causal boundary (or the Tk tail) pay for the mask.
The head dimension is padded to a power of two (>= 16) with masked loads, so D = 48, 64,
80, 128 all work. fp16 / bf16 / fp32 inputs, fp32 accumulation; fp32 inputs use IEEE
fp32 products (not TF32) so the fp32 kernel matches the reference to ~1e-5.

References: Dao et al., FlashAttention (2022) and FlashAttention-2 (2023); Milakov &
Gimelshein, Online normalizer calculation for softmax (2018); Triton's fused-attention
tutorial; linkedin/Liger-Kernel (module layout).

``attention_ref`` is the fp32 plain-torch spec; ``attention`` launches the Triton kernel
(CUDA tensors, or CPU tensors when ``TRITON_INTERPRET=1`` was set before this import).
"""

from __future__ import annotations

import math

import torch

from polyasr.kernels._triton import check_launchable, interpreting, tl, triton

_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_HEAD_DIM = 256
_LOG2E = 1.4426950408889634  # softmax runs on exp2: exp(x) = exp2(x * log2(e))
# Finite start of the running max, so exp2(-inf - m) is 0 and never NaN. A constexpr: a jitted
# function may only read module globals that are compile-time constants.
_M_INIT = tl.constexpr(-1.0e30)


# ---- kernel -------------------------------------------------------------------------------------


@triton.jit
def _load_tile(ptrs, rows_ok, cols_ok, CHECK_ROWS: tl.constexpr, CHECK_COLS: tl.constexpr):
    """Load a 2-D tile, bounds-checking only the axes that can run past the tensor."""
    if CHECK_ROWS and CHECK_COLS:
        return tl.load(ptrs, mask=rows_ok & cols_ok, other=0.0)
    elif CHECK_ROWS:
        return tl.load(ptrs, mask=rows_ok, other=0.0)
    elif CHECK_COLS:
        return tl.load(ptrs, mask=cols_ok, other=0.0)
    else:
        return tl.load(ptrs)


@triton.jit
def _attn_inner(
    acc,
    l_i,
    m_i,
    q,
    k_ptrs,
    v_ptrs,
    km_ptr,
    stride_kn,
    stride_vn,
    stride_kmn,
    offs_m,
    offs_n,
    d_ok,
    lo,
    hi,
    kv_len,
    q_shift,
    qk_scale,
    TK,
    MASKED: tl.constexpr,
    IS_CAUSAL: tl.constexpr,
    HAS_KEY_MASK: tl.constexpr,
    EVEN_N: tl.constexpr,
    EVEN_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Online softmax over key blocks [lo, hi): returns the updated (acc, l_i, m_i).

    acc (BLOCK_M, BLOCK_D) fp32, l_i / m_i (BLOCK_M,) fp32. With MASKED, keys past
    ``kv_len``, (IS_CAUSAL) keys right of ``row + q_shift`` and (HAS_KEY_MASK) keys whose
    ``km_ptr`` byte is 0 get -inf scores.
    """
    CHECK_N: tl.constexpr = MASKED and not EVEN_N  # only a masked block can hold the Tk tail
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        k = _load_tile(
            k_ptrs + start_n * stride_kn, d_ok[:, None], (cols < TK)[None, :], not EVEN_D, CHECK_N
        )  # (BLOCK_D, BLOCK_N): k transposed
        qk = tl.dot(q, k, input_precision=DOT_PRECISION) * qk_scale  # log2-domain scores
        if MASKED:
            keep = cols[None, :] < kv_len
            if IS_CAUSAL:
                keep = keep & (cols[None, :] <= offs_m[:, None] + q_shift)
            if HAS_KEY_MASK:
                keep = keep & (tl.load(km_ptr + cols * stride_kmn, mask=cols < TK, other=0) != 0)[None, :]
            qk = tl.where(keep, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.math.exp2(qk - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = _load_tile(
            v_ptrs + start_n * stride_vn, (cols < TK)[:, None], d_ok[None, :], CHECK_N, not EVEN_D
        )  # (BLOCK_N, BLOCK_D)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.heuristics(
    {
        "EVEN_M": lambda a: a["TQ"] % a["BLOCK_M"] == 0,
        "EVEN_N": lambda a: a["TK"] % a["BLOCK_N"] == 0,
        "EVEN_D": lambda a: a["HEAD_DIM"] == a["BLOCK_D"],
    }
)
@triton.jit
def _attn_fwd_kernel(
    Q_ptr,
    K_ptr,
    V_ptr,
    O_ptr,
    KVLEN_ptr,
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
    stride_kmb,
    stride_kmn,
    H,
    GROUP,
    TQ,
    TK,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    IS_CAUSAL: tl.constexpr,
    HAS_KV_LENS: tl.constexpr,
    HAS_KEY_MASK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    EVEN_M: tl.constexpr,
    EVEN_N: tl.constexpr,
    EVEN_D: tl.constexpr,
):
    """One program: BLOCK_M query rows of one (batch, head). Grid (cdiv(TQ, BLOCK_M), B * H)."""
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)  # int64 bases: a long KV cache can exceed 2**31 elements
    h = (bh % H).to(tl.int64)
    hk = h // GROUP
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    rows_ok = offs_m < TQ

    q_ptrs = Q_ptr + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    q = _load_tile(q_ptrs, rows_ok[:, None], d_ok[None, :], not EVEN_M, not EVEN_D)
    k_ptrs = K_ptr + b * stride_kb + hk * stride_kh + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd
    v_ptrs = V_ptr + b * stride_vb + hk * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd

    # Keys [0, full) are seen by every row of this program; [full, hi) need the mask.
    kv_len = TK
    if HAS_KV_LENS:
        kv_len = tl.maximum(tl.minimum(tl.load(KVLEN_ptr + b), TK), 0)
    q_shift = TK - TQ
    hi = kv_len
    full = kv_len
    if IS_CAUSAL:
        m0 = start_m * BLOCK_M
        hi = tl.maximum(tl.minimum(hi, m0 + BLOCK_M + q_shift), 0)
        full = tl.maximum(tl.minimum(full, m0 + 1 + q_shift), 0)
    full = full // BLOCK_N * BLOCK_N
    if HAS_KEY_MASK:  # any key may be masked: every block pays for the mask
        full = 0
    km_ptr = KMASK_ptr + b * stride_kmb

    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], _M_INIT, dtype=tl.float32)
    acc, l_i, m_i = _attn_inner(
        acc,
        l_i,
        m_i,
        q,
        k_ptrs,
        v_ptrs,
        km_ptr,
        stride_kn,
        stride_vn,
        stride_kmn,
        offs_m,
        offs_n,
        d_ok,
        0,
        full,
        kv_len,
        q_shift,
        qk_scale,
        TK,
        False,
        IS_CAUSAL,
        HAS_KEY_MASK,
        EVEN_N,
        EVEN_D,
        DOT_PRECISION,
        BLOCK_N,
    )
    acc, l_i, m_i = _attn_inner(
        acc,
        l_i,
        m_i,
        q,
        k_ptrs,
        v_ptrs,
        km_ptr,
        stride_kn,
        stride_vn,
        stride_kmn,
        offs_m,
        offs_n,
        d_ok,
        full,
        hi,
        kv_len,
        q_shift,
        qk_scale,
        TK,
        True,
        IS_CAUSAL,
        HAS_KEY_MASK,
        EVEN_N,
        EVEN_D,
        DOT_PRECISION,
        BLOCK_N,
    )
    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]  # a row that saw no key stays 0

    o_ptrs = O_ptr + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    out = out.to(O_ptr.dtype.element_ty)
    if EVEN_M and EVEN_D:
        tl.store(o_ptrs, out)
    else:
        tl.store(o_ptrs, out, mask=rows_ok[:, None] & d_ok[None, :])


# ---- reference ----------------------------------------------------------------------------------


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_lengths, key_mask=None) -> tuple[int, int, int]:
    """Validate shapes; returns (B, H // Hkv, Tk). q (B, H, Tq, D), k / v (B, Hkv, Tk, D)."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 4:
            raise ValueError(f"attention: {name} must be (B, H, T, D), got shape {tuple(x.shape)}")
    batch, heads, _, dim = q.shape
    if k.shape != v.shape:
        raise ValueError(f"attention: k {tuple(k.shape)} and v {tuple(v.shape)} must have the same shape")
    if k.shape[0] != batch or k.shape[3] != dim:
        raise ValueError(f"attention: k/v {tuple(k.shape)} do not match q {tuple(q.shape)} in batch or head dim")
    kv_heads = k.shape[1]
    if kv_heads == 0 or heads % kv_heads:
        raise ValueError(f"attention: {kv_heads} kv heads must divide {heads} query heads")
    if not (q.device == k.device == v.device):
        raise ValueError(f"attention: q, k, v on different devices ({q.device}, {k.device}, {v.device})")
    if kv_lengths is not None:
        if not isinstance(kv_lengths, torch.Tensor) or kv_lengths.shape != (batch,):
            shape = tuple(kv_lengths.shape) if isinstance(kv_lengths, torch.Tensor) else type(kv_lengths).__name__
            raise ValueError(f"attention: kv_lengths must be a ({batch},) tensor, got {shape}")
        if kv_lengths.dtype.is_floating_point or kv_lengths.dtype.is_complex or kv_lengths.dtype == torch.bool:
            raise ValueError(f"attention: kv_lengths must be integer, got {kv_lengths.dtype}")
    if key_mask is not None and (
        not isinstance(key_mask, torch.Tensor) or key_mask.dtype != torch.bool or key_mask.shape != (batch, k.shape[2])
    ):
        what = f"{key_mask.dtype} {tuple(key_mask.shape)}" if isinstance(key_mask, torch.Tensor) else key_mask
        raise ValueError(f"attention: key_mask must be a bool ({batch}, {k.shape[2]}) tensor, got {what}")
    return batch, heads // kv_heads, k.shape[2]


def attention_mask(
    tq: int, tk: int, *, kv_lengths=None, causal: bool = False, key_mask=None, device=None
) -> torch.Tensor:
    """The keys each query may see, True = keep: (Tq, Tk), or (B, 1, Tq, Tk) with ``kv_lengths`` / ``key_mask``."""
    keep = torch.ones(tq, tk, dtype=torch.bool, device=device)
    if causal:
        keep = keep.tril(tk - tq)  # row i keeps j <= i + Tk - Tq
    if key_mask is not None:
        keep = keep & key_mask.to(device=device)[:, None, None, :]
    if kv_lengths is None:
        return keep
    cols = torch.arange(tk, device=device)
    return keep & (cols < kv_lengths.to(device=device)[:, None, None, None])


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    kv_lengths=None,
    causal: bool = False,
    scale: float | None = None,
    key_mask=None,
) -> torch.Tensor:
    """The spec in fp32 plain torch: q (B, H, Tq, D), k / v (B, Hkv, Tk, D) -> (B, H, Tq, D) float32.

    Materialises the (B, H, Tq, Tk) scores, so it is for tests and short inputs. float64
    inputs stay float64 (to check the formula itself). See the module docstring for the masks.
    """
    _, group, tk = _check_inputs(q, k, v, kv_lengths, key_mask)
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    if group > 1:
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, H, Tq, Tk)
    keep = attention_mask(q.shape[2], tk, kv_lengths=kv_lengths, causal=causal, key_mask=key_mask, device=q.device)
    scores = scores.masked_fill(~keep, -torch.inf)
    probs = scores.softmax(dim=-1).nan_to_num(nan=0.0)  # a row with no key: exp(-inf) / 0 -> 0
    return probs @ v


# ---- launcher -----------------------------------------------------------------------------------


def _pick_config(tq: int, head_dim: int, dtype: torch.dtype, sm: int | None) -> dict:
    """Fixed block sizes and launch options (no autotune: the interpreter cannot afford it).

    ``sm`` is the compute capability's major version times 10 (None: interpreter). Chosen so that none
    spills registers and all fit A100 / H100 shared memory, checked by compiling for sm_80
    and sm_90 (ptxas resource usage); fp32 runs IEEE products on FMA units, which need far
    more registers per output, hence its smaller tiles. Not yet timed on a GPU.
    """
    block_d = max(16, triton.next_power_of_2(head_dim))
    if sm is None:  # the interpreter pays per program and per loop step, not per element
        return dict(BLOCK_M=32, BLOCK_N=32, BLOCK_D=block_d)
    if dtype == torch.float32:
        block_m, block_n = {64: (64, 32), 128: (32, 16)}.get(max(block_d, 64), (16, 16))
        return dict(BLOCK_M=16 if tq <= 16 else block_m, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=8, num_stages=2)
    if tq <= 16:  # decode: one small query block streams long key blocks
        return dict(
            BLOCK_M=16,
            BLOCK_N=64 if block_d <= 128 else 32,
            BLOCK_D=block_d,
            num_warps=4,
            num_stages=3 if block_d <= 128 else 2,
        )
    if block_d <= 64:
        return dict(BLOCK_M=128, BLOCK_N=64, BLOCK_D=block_d, num_warps=4, num_stages=3)
    if block_d <= 128:  # sm_90's wgmma reads its operands from shared memory: 128 x 64
        # fits in registers there, while sm_8x spills it (128 x 32 does not)
        return dict(BLOCK_M=128, BLOCK_N=64 if sm >= 90 else 32, BLOCK_D=block_d, num_warps=8, num_stages=2)
    return dict(BLOCK_M=64, BLOCK_N=32, BLOCK_D=block_d, num_warps=8, num_stages=2)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    kv_lengths=None,
    causal: bool = False,
    scale: float | None = None,
    key_mask=None,
) -> torch.Tensor:
    """Flash-attention forward: q (B, H, Tq, D), k / v (B, Hkv, Tk, D) -> (B, H, Tq, D) in q's dtype.

    ``kv_lengths`` (B,) integer tensor (key-padding mask, clamped to 0..Tk, read on the
    device: no host sync), ``causal`` (queries are the last Tq positions), ``scale``
    (default 1 / sqrt(D)), ``key_mask`` (B, Tk) bool, True = keep. q, k, v share one dtype
    (fp16, bf16 or fp32) and one device; any strides are accepted, a copy is made only when the
    last dimension is not contiguous.
    """
    batch, group, tk = _check_inputs(q, k, v, kv_lengths, key_mask)
    interpret = interpreting()
    if q.dtype not in _KERNEL_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"attention: q, k, v must share one of {_KERNEL_DTYPES}, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not 1 <= q.shape[3] <= _MAX_HEAD_DIM:
        raise ValueError(f"attention: head dim {q.shape[3]} must lie in 1..{_MAX_HEAD_DIM}")
    check_launchable("attention", q)
    heads, tq, head_dim = q.shape[1], q.shape[2], q.shape[3]
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    out = torch.empty(batch, heads, tq, head_dim, dtype=q.dtype, device=q.device)
    if out.numel() == 0 or tk == 0:
        return out.zero_()  # no key at all: every row is zeros (and a launch would see null pointers)
    if kv_lengths is not None:
        lens = kv_lengths.to(device=q.device, dtype=torch.int32).contiguous()
    else:
        lens = out  # never read: HAS_KV_LENS is False
    if key_mask is not None:
        kmask = key_mask.to(q.device).view(torch.uint8)  # same bytes; Triton reads them as 0 / 1
    else:
        kmask = out  # never read: HAS_KEY_MASK is False
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    sm = None if interpret else 10 * torch.cuda.get_device_capability(q.device)[0]
    cfg = _pick_config(tq, head_dim, q.dtype, sm)
    grid = (triton.cdiv(tq, cfg["BLOCK_M"]), batch * heads)
    _attn_fwd_kernel[grid](
        q,
        k,
        v,
        out,
        lens,
        kmask,
        *q.stride(),
        *k.stride(),
        *v.stride(),
        *out.stride(),
        *(kmask.stride() if key_mask is not None else (0, 0)),
        heads,
        group,
        tq,
        tk,
        scale * _LOG2E,
        HEAD_DIM=head_dim,
        IS_CAUSAL=bool(causal),
        HAS_KV_LENS=kv_lengths is not None,
        HAS_KEY_MASK=key_mask is not None,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        **cfg,
    )
    return out
