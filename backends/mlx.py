"""The MLX backend (Apple Silicon; `mlx[cpu]` on Linux): the op set on `mlx.core` / `mlx.fast`.

Arrays are `mx.array`s in the same layouts as the torch backend (channels-last `(B, T, C)`,
attention `(B, H, T, D)`), so model code runs unchanged. MLX is lazy: nothing is computed until a
value is read on the host (`to_numpy`), which the decoding loops do once per step.

Status (issue 8): the op set Whisper uses, proven by running Whisper base on real weights with
identical transcripts to the torch backend. The Conformer ops (GigaAM, Parakeet), the Qwen3 ops
and the decoding loops written in torch (Parakeet's device loop) are not here yet: models that
need them fail with an AttributeError naming the op. The frontend's window and mel bank are still
computed by `kernels.mel` (torch, once per configuration).
"""

from __future__ import annotations

import contextlib
import functools
import math

import mlx.core as mx
import numpy as np

from polyasr.errors import BackendError

_DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


class MLXBackend:
    name = "mlx"
    kernels = "mlx"
    families = ("whisper",)  # model families whose every op exists here (the engine refuses the others)

    def __init__(self, dtype: str | None = None):
        dtype = dtype or "float32"
        if dtype not in _DTYPES:
            raise BackendError(f"unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
        self.device = "mlx:" + str(mx.default_device()).removeprefix("Device(").removesuffix(")").replace(", ", ":")
        self.dtype_name, self.dtype = dtype, _DTYPES[dtype]

    def __repr__(self):
        return f"MLXBackend(device={self.device}, dtype={self.dtype_name})"

    # ---- arrays -------------------------------------------------------------------------
    def asarray(self, x, dtype=None):
        a = mx.array(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else mx.array(x)
        if dtype is None and mx.issubdtype(a.dtype, mx.floating):
            dtype = self.dtype
        return a.astype(dtype) if dtype is not None else a

    def param(self, x: np.ndarray, dtype_name: str | None = None):
        """A weight from a checkpoint array; `dtype_name="bfloat16"` marks raw uint16 bf16 bits."""
        a = mx.array(np.ascontiguousarray(x))
        if dtype_name == "bfloat16":
            a = a.view(mx.bfloat16)
        return a.astype(self.dtype) if mx.issubdtype(a.dtype, mx.floating) else a

    @staticmethod
    def to_numpy(x) -> np.ndarray:
        if mx.issubdtype(x.dtype, mx.floating) and x.dtype != mx.float32:
            x = x.astype(mx.float32)
        return np.array(x)

    def cast(self, x):
        return x.astype(self.dtype)

    def zeros(self, shape, dtype=None):
        return mx.zeros(shape, dtype=dtype or self.dtype)

    @staticmethod
    def synchronize():
        mx.synchronize()

    @staticmethod
    def no_grad():
        return contextlib.nullcontext()  # MLX records no graph for gradients unless asked

    @staticmethod
    def contiguous(x):
        return mx.contiguous(x)

    # ---- layers ---------------------------------------------------------------------------
    @staticmethod
    def prepare_linear(w):
        """(Cout, Cin) -> (Cin, Cout): `linear` is then one plain matmul."""
        return mx.contiguous(w.T)

    @staticmethod
    def linear(x, w, b=None):
        return mx.addmm(b, x, w) if b is not None else x @ w

    @staticmethod
    def conv1d(x, w, b=None, stride: int = 1, padding: int = 0):
        """Channels-last conv: x (B, T, Cin), w (Cout, Cin, K) (torch layout) -> (B, T', Cout)."""
        y = mx.conv1d(x, w.transpose(0, 2, 1), stride=stride, padding=padding)
        return y + b if b is not None else y

    @staticmethod
    def layer_norm(x, w, b, eps: float = 1e-5):
        return mx.fast.layer_norm(x, w, b, eps)

    @staticmethod
    def gelu(x):
        """Exact (erf) GELU, as torch's default."""
        return x * 0.5 * (1.0 + mx.erf(x * (1.0 / math.sqrt(2.0))))

    @staticmethod
    def embedding(ids, table):
        return table[ids]

    @staticmethod
    def attention(q, k, v, *, mask=None, causal: bool = False):
        """q (B, H, Tq, D), k/v (B, H, Tk, D); mask: additive or bool (True = keep); causal: queries
        are the last Tq positions."""
        tq, tk = q.shape[2], k.shape[2]
        if mask is not None and mask.dtype == mx.bool_:
            mask = mx.where(mask, 0.0, -mx.inf).astype(q.dtype)
        if causal and tq > 1:
            keep = mx.arange(tk)[None, :] <= mx.arange(tq)[:, None] + (tk - tq)
            causal_mask = mx.where(keep, 0.0, -mx.inf).astype(q.dtype)
            mask = causal_mask if mask is None else mask + causal_mask
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=q.shape[-1] ** -0.5, mask=mask)

    # ---- shapes ---------------------------------------------------------------------------
    @staticmethod
    def split_heads(x, n_heads: int):
        b, t, c = x.shape
        return x.reshape(b, t, n_heads, c // n_heads).transpose(0, 2, 1, 3)

    @staticmethod
    def merge_heads(x):
        b, h, t, d = x.shape
        return x.transpose(0, 2, 1, 3).reshape(b, t, h * d)

    @staticmethod
    def split(x, sizes, axis: int = -1):
        return mx.split(x, list(np.cumsum(sizes)[:-1]), axis=axis)

    @staticmethod
    def transpose(x, axes):
        return x.transpose(*axes)

    @staticmethod
    def repeat_batch(x, n: int):
        return mx.repeat(x, n, axis=0)

    @staticmethod
    def cache_write(cache, value, pos: int):
        """Write value (B, H, n, D) into cache (B, H, Tmax, D) at pos..pos+n; the cache object is
        updated in place (MLX slice assignment), as the torch backend's is."""
        cache[:, :, pos:pos + value.shape[2]] = value
        return cache

    # ---- audio frontend ---------------------------------------------------------------------
    def mel_power(self, samples: np.ndarray, cfg):
        """Mel power frames of host samples (N,), no centring: (1, n_mels, 1 + (N - n_fft) // hop), one
        fewer with `drop_last_frame` (as `kernels.mel.mel_power`)."""
        window, bank = _frontend_tables(cfg)
        x = mx.array(np.ascontiguousarray(samples, dtype=np.float32))
        n_frames = max(0, 1 + (x.shape[0] - cfg.n_fft) // cfg.hop_length - int(cfg.drop_last_frame))
        frames = mx.as_strided(x, (n_frames, cfg.n_fft), (cfg.hop_length, 1))
        spec = mx.fft.rfft(frames * window, n=cfg.n_fft)
        power = mx.square(mx.abs(spec)) if cfg.power == 2.0 else mx.abs(spec) ** cfg.power
        return (power @ bank.T).T[None]

    @staticmethod
    def whisper_log(mel, log_max: float):
        x = mx.log10(mx.maximum(mel, 1e-10))
        return (mx.maximum(x, log_max - 8.0) + 4.0) / 4.0

    @staticmethod
    def pad_last(x, n: int, value: float = 0.0):
        return mx.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n)], constant_values=value)


@functools.lru_cache(maxsize=16)
def _frontend_tables(cfg):
    """The analysis window (n_fft,) and mel bank (n_mels, F) of `cfg`, as fp32 MLX arrays."""
    from polyasr.kernels.mel import mel_filterbank, window_tensor

    bank = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max, cfg.mel_scale, cfg.mel_norm)
    return mx.array(window_tensor(cfg).numpy()), mx.array(bank.numpy())
