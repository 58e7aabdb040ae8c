"""The log-mel frontend of ``kernels/mel.py`` as two Triton kernels, same contract as ``log_mel_ref``.

For audio ``x`` (B, N) with valid lengths ``L`` (B,) and a ``MelConfig``, kernel 1 computes, for
BLOCK_T frames of one item at a time,

    s         = t * hop + n - pad                  (pad = n_fft // 2 when centred, else 0)
    s         -> -s when s < 0, 2 (L - 1) - s when s >= L   (reflect, each item at its own end)
              or the sample reads 0 outside 0..L-1          (constant padding, or not centred)
    f[t, n]   = x[s] - a * x[s - 1]  (s >= 1)      (pre-emphasis in the load, when set)
    re, im    = f @ (w * cos), f @ (w * sin)       (n_fft, F) bases, window folded in, float64-built
    P         = re^2 + im^2  (power 2) | sqrt(.)   (power 1)
    M         = P @ fb^T                           (BLOCK_T, n_mels), a second tl.dot, fp32 accumulation
    Y         = log10(max(M, g))                   (log10_whisper; the floor comes in kernel 2)
              | ln(M + g) or ln(max(M, g)), optionally min(., clamp_max) before the log   (ln)

and writes Y as (B, n_mels, T), zero past each item's frame count. The DFT is a matmul
against a precomputed (n_fft, F) basis, looped in (BLOCK_K, BLOCK_F) tiles, so no
(B, T, n_fft) frame tensor or (B, F, T) spectrum is ever in memory. Kernel 2, one program
per item over all its mel rows, reads the item's valid frames twice: Whisper's
``max(Y, max(Y) - 8)`` then ``(. + 4) / 4`` (max over the item's valid frames), or
per-feature normalisation ``(Y - mean) / (std + 1e-5)`` (std with n - 1, 0 for one frame;
NeMo's ``normalize_batch``). Both are run, Whisper's first, when a config asks for both.

Unsupported (NotImplementedError from the launcher): ``power`` other than 1 or 2.
``log_mel_ref`` (``kernels/mel.py``) is the spec; ``log_mel`` launches the kernels (CUDA
tensors, or CPU tensors when ``TRITON_INTERPRET=1`` was set before this import). Not wired into
the backend or the models.
"""

from __future__ import annotations

import functools
import math

import torch

from polyasr.kernels._triton import check_launchable, interpreting, tl, triton
from polyasr.kernels.mel import MelConfig, _as_batch, _as_lengths, mel_filterbank, num_frames, window_tensor
from polyasr.kernels.mel_tables import NORM_STD_EPS as _NORM_STD_EPS

# ---- kernels ------------------------------------------------------------------------------------


@triton.jit
def _frame_tile(
    X_ptr,
    row,
    L,
    offs_t,
    offs_k,
    T,
    a,
    HOP: tl.constexpr,
    NFFT: tl.constexpr,
    PAD: tl.constexpr,
    REFLECT: tl.constexpr,
    HAS_PREEMPH: tl.constexpr,
):
    """(BLOCK_T, BLOCK_K) samples of the padded, pre-emphasised signal: padding by index arithmetic."""
    s = offs_t[:, None] * HOP + offs_k[None, :] - PAD
    if REFLECT:  # the reference requires L > n_fft // 2, so one reflection lands inside 0..L-1
        s = tl.where(s < 0, -s, s)
        s = tl.where(s >= L, 2 * (L - 1) - s, s)
    ok = (s >= 0) & (s < L) & (offs_k[None, :] < NFFT) & (offs_t[:, None] < T)
    f = tl.load(row + s, mask=ok, other=0.0)
    if HAS_PREEMPH:
        f -= a * tl.load(row + s - 1, mask=ok & (s >= 1), other=0.0)
    return f


@triton.jit
def _log_mel_fwd_kernel(
    X_ptr,
    LEN_ptr,
    FLEN_ptr,
    COS_ptr,
    SIN_ptr,
    FB_ptr,
    Y_ptr,
    stride_xb,
    stride_bk,
    stride_bf,
    stride_ff,
    stride_fm,
    stride_yb,
    stride_ym,
    stride_yt,
    T,
    N_MELS,
    preemph,
    guard,
    clamp_max,
    HOP: tl.constexpr,
    NFFT: tl.constexpr,
    NFREQ: tl.constexpr,
    PAD: tl.constexpr,
    REFLECT: tl.constexpr,
    HAS_PREEMPH: tl.constexpr,
    POWER: tl.constexpr,
    LOG10: tl.constexpr,
    GUARD_ADD: tl.constexpr,
    HAS_CLAMP_MAX: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_F: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    """One program: BLOCK_T frames x all mels of one item. Grid (cdiv(T, BLOCK_T), B).

    COS/SIN/FB are zero-padded on the host to multiples of BLOCK_K / BLOCK_F / BLOCK_M: no masks there.
    """
    b = tl.program_id(1).to(tl.int64)
    offs_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_m = tl.arange(0, BLOCK_M)
    L = tl.load(LEN_ptr + b)
    flen = tl.load(FLEN_ptr + b)
    row = X_ptr + b * stride_xb
    acc = tl.zeros([BLOCK_T, BLOCK_M], dtype=tl.float32)
    for f0 in range(0, NFREQ, BLOCK_F):
        offs_f = f0 + tl.arange(0, BLOCK_F)
        re = tl.zeros([BLOCK_T, BLOCK_F], dtype=tl.float32)
        im = tl.zeros([BLOCK_T, BLOCK_F], dtype=tl.float32)
        for k0 in range(0, NFFT, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            frames = _frame_tile(X_ptr, row, L, offs_t, offs_k, T, preemph, HOP, NFFT, PAD, REFLECT, HAS_PREEMPH)
            basis = offs_k[:, None] * stride_bk + offs_f[None, :] * stride_bf
            re = tl.dot(frames, tl.load(COS_ptr + basis), re, input_precision="ieee")
            im = tl.dot(frames, tl.load(SIN_ptr + basis), im, input_precision="ieee")
        power = re * re + im * im
        if POWER == 1:
            power = tl.sqrt(power)
        fb = tl.load(FB_ptr + offs_f[:, None] * stride_ff + offs_m[None, :] * stride_fm)  # (BLOCK_F, BLOCK_M)
        acc = tl.dot(power, fb, acc, input_precision="ieee")
    if LOG10:
        y = tl.log(tl.maximum(acc, guard)) * 0.4342944819032518  # log10 e
    else:
        if GUARD_ADD:  # statements, not a conditional expression: constexpr branches compile away
            y = acc + guard
        else:
            y = tl.maximum(acc, guard)
        if HAS_CLAMP_MAX:
            y = tl.minimum(y, clamp_max)
        y = tl.log(y)
    y = tl.where((offs_t < flen)[:, None], y, 0.0)  # frames past the item's length are zero
    ptrs = Y_ptr + b * stride_yb + offs_m[None, :] * stride_ym + offs_t[:, None] * stride_yt
    tl.store(ptrs, y, mask=(offs_t < T)[:, None] & (offs_m < N_MELS)[None, :])


@triton.jit
def _mel_norm_fwd_kernel(
    Y_ptr,
    FLEN_ptr,
    stride_yb,
    stride_ym,
    stride_yt,
    N_MELS,
    eps,
    WHISPER: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """In place over one item's valid frames. Grid (B,); BLOCK_M >= n_mels.

    WHISPER: y = (max(y, max(y) - 8) + 4) / 4, max over the item's (n_mels, valid T).
    else:    y = (y - mean) / (std + eps) per mel row, std with n - 1 (0 when n == 1).
    """
    b = tl.program_id(0).to(tl.int64)
    flen = tl.load(FLEN_ptr + b)
    offs_m = tl.arange(0, BLOCK_M)
    m_ok = offs_m < N_MELS
    base = Y_ptr + b * stride_yb + offs_m[:, None] * stride_ym
    first = tl.zeros([BLOCK_M], dtype=tl.float32)  # running max (from -inf) or running sum
    if WHISPER:
        first = first - float("inf")
    for t0 in range(0, flen, BLOCK_T):  # pass 1: max or sum
        offs_t = t0 + tl.arange(0, BLOCK_T)
        ok = m_ok[:, None] & (offs_t < flen)[None, :]
        if WHISPER:
            y = tl.load(base + offs_t[None, :] * stride_yt, mask=ok, other=float("-inf"))
            first = tl.maximum(first, tl.max(y, 1))
        else:
            first += tl.sum(tl.load(base + offs_t[None, :] * stride_yt, mask=ok, other=0.0), 1)
    n = flen.to(tl.float32)
    peak = tl.max(tl.where(m_ok, first, float("-inf")), 0) - 8.0
    mean = first / tl.maximum(n, 1.0)  # n == 0: nothing is written
    second = tl.zeros([BLOCK_M], dtype=tl.float32)
    if not WHISPER:
        for t0 in range(0, flen, BLOCK_T):  # pass 2: squared deviations (two-pass, as the reference)
            offs_t = t0 + tl.arange(0, BLOCK_T)
            ok = m_ok[:, None] & (offs_t < flen)[None, :]
            d = tl.load(base + offs_t[None, :] * stride_yt, mask=ok, other=0.0) - mean[:, None]
            second += tl.sum(tl.where(ok, d * d, 0.0), 1)
    std = tl.where(flen > 1, tl.sqrt(second / tl.maximum(n - 1.0, 1.0)), 0.0)  # n == 1: std 0, as NeMo
    for t0 in range(0, flen, BLOCK_T):  # last pass: write
        offs_t = t0 + tl.arange(0, BLOCK_T)
        ok = m_ok[:, None] & (offs_t < flen)[None, :]
        ptrs = base + offs_t[None, :] * stride_yt
        y = tl.load(ptrs, mask=ok, other=0.0)
        if WHISPER:
            y = (tl.maximum(y, peak) + 4.0) / 4.0
        else:
            y = (y - mean[:, None]) / (std[:, None] + eps)
        tl.store(ptrs, y, mask=ok)


# ---- launcher -----------------------------------------------------------------------------------


def _pick_config(n_mels: int, interpret: bool) -> dict:
    """Fixed blocks (no autotune). GPU choices are first guesses, not yet timed on a GPU."""
    block_m = max(16, triton.next_power_of_2(n_mels))
    if interpret:  # few, large tiles: the interpreter's cost is per op, not per element
        return dict(BLOCK_T=32, BLOCK_K=128, BLOCK_F=128, BLOCK_M=block_m)
    return dict(BLOCK_T=64, BLOCK_K=32, BLOCK_F=64, BLOCK_M=block_m, num_warps=4 if block_m < 128 else 8)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


@functools.lru_cache(maxsize=32)
def _bases(cfg: MelConfig, device: torch.device, block_k: int, block_f: int, block_m: int):
    """Windowed DFT bases (n_fft', F') cos and sin, and the bank transposed (F', n_mels'), zero-padded
    to the blocks. Built in float64 with n * k reduced mod n_fft (exact angles), then cast to fp32."""
    n_fft, n_freq = cfg.n_fft, cfg.n_fft // 2 + 1
    n = torch.arange(n_fft, dtype=torch.int64)[:, None]
    k = torch.arange(n_freq, dtype=torch.int64)[None, :]
    angle = (2.0 * math.pi / n_fft) * ((n * k) % n_fft).to(torch.float64)
    w = window_tensor(cfg, torch.float64)[:, None]
    shape = (_round_up(n_fft, block_k), _round_up(n_freq, block_f))
    cos, sin = torch.zeros(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64)
    cos[:n_fft, :n_freq], sin[:n_fft, :n_freq] = w * torch.cos(angle), w * torch.sin(angle)
    fb = torch.zeros(shape[1], block_m, dtype=torch.float32)
    fb[:n_freq, : cfg.n_mels] = mel_filterbank(
        cfg.sample_rate, n_fft, cfg.n_mels, cfg.f_min, cfg.f_max, cfg.mel_scale, cfg.mel_norm
    ).T
    return tuple(z.to(device=device, dtype=torch.float32) for z in (cos, sin, fb))


def _check(audio: torch.Tensor, cfg: MelConfig) -> None:
    if cfg.power not in (1.0, 2.0):
        raise NotImplementedError(
            f"log_mel: the Triton frontend computes power 1 or 2, got power={cfg.power}; use kernels.mel.log_mel_ref"
        )
    check_launchable("log_mel", audio)


def log_mel(audio: torch.Tensor, cfg: MelConfig, lengths=None) -> tuple[torch.Tensor, torch.Tensor]:
    """audio (B, N) or (N,) -> features (B, n_mels, T) float32, frame_lengths (B,) int64; as ``log_mel_ref``.

    Float64 audio is computed in float32. Validating ``lengths`` (and reflect's L > n_fft // 2)
    reads them on the host, as the reference does.
    """
    audio = _as_batch(audio).to(torch.float32).contiguous()
    _check(audio, cfg)
    lengths = _as_lengths(lengths, audio)
    batch, n = audio.shape
    half = cfg.n_fft // 2
    full = torch.full((batch,), n, dtype=torch.int64, device=audio.device)
    lens = full if lengths is None else lengths.contiguous()
    reflect = cfg.center and cfg.pad_mode == "reflect"
    if reflect and batch and int(lens.min()) <= half:
        raise ValueError(f"reflect padding needs more than n_fft // 2 = {half} samples per item, got {lens.tolist()}")
    frame_lengths = num_frames(lens, cfg)
    t = int(num_frames(torch.tensor([n]), cfg)[0])
    out = torch.zeros(batch, cfg.n_mels, t, dtype=torch.float32, device=audio.device)
    if out.numel() == 0:
        return out, frame_lengths
    blocks = _pick_config(cfg.n_mels, interpreting())
    cos, sin, fb = _bases(cfg, audio.device, blocks["BLOCK_K"], blocks["BLOCK_F"], blocks["BLOCK_M"])
    _log_mel_fwd_kernel[(triton.cdiv(t, blocks["BLOCK_T"]), batch)](
        audio,
        lens,
        frame_lengths,
        cos,
        sin,
        fb,
        out,
        audio.stride(0),
        *cos.stride(),
        *fb.stride(),
        *out.stride(),
        t,
        cfg.n_mels,
        float(cfg.preemphasis or 0.0),
        float(cfg.log_guard),
        float(cfg.log_clamp_max or 0.0),
        HOP=cfg.hop_length,
        NFFT=cfg.n_fft,
        NFREQ=cfg.n_fft // 2 + 1,
        PAD=half if cfg.center else 0,
        REFLECT=reflect,
        HAS_PREEMPH=cfg.preemphasis is not None,
        POWER=int(cfg.power),
        LOG10=cfg.log == "log10_whisper",
        GUARD_ADD=cfg.log_guard_type == "add",
        HAS_CLAMP_MAX=cfg.log_clamp_max is not None,
        **blocks,
    )
    passes = ([True] if cfg.log == "log10_whisper" else []) + ([False] if cfg.normalize == "per_feature" else [])
    for whisper in passes:
        _mel_norm_fwd_kernel[(batch,)](
            out,
            frame_lengths,
            *out.stride(),
            cfg.n_mels,
            _NORM_STD_EPS,
            WHISPER=whisper,
            BLOCK_M=blocks["BLOCK_M"],
            BLOCK_T=blocks["BLOCK_T"],
        )
    return out, frame_lengths
