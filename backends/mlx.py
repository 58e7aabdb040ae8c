"""The MLX backend (Apple Silicon; `mlx[cpu]` on Linux): the op set on `mlx.core` / `mlx.fast`.

Arrays are `mx.array`s in the same layouts as the torch backend (channels-last `(B, T, C)`,
attention `(B, H, T, D)`), so model code runs unchanged. MLX is lazy: nothing is computed until a
value is read on the host (`to_numpy`), which the decoding loops do once per step.

Every model family runs here (issue 8); `docs/architecture.md` lists how each op maps onto MLX.
Lazy evaluation is used as it is meant to be: the decoding loops read one step's result on the
host per step (Whisper, Qwen3), or evaluate once per few steps (`evaluate`, the TDT loop), and
the models call `evaluate` after the encoder so stage timings are honest. Nothing here imports
torch: weights arrive as numpy views of the checkpoint files, the frontend's tables come from
`kernels/mel_tables.py` (numpy). Optional weight quantisation: `mlx_quant.py`.
"""

from __future__ import annotations

import contextlib
import functools
import math

import mlx.core as mx
import numpy as np

from polyasr.backends import mlx_quant
from polyasr.errors import BackendError
from polyasr.kernels.mel_tables import NORM_STD_EPS, frame_counts, tables

_DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


class MLXBackend:
    name = "mlx"
    kernels = "mlx"

    def __init__(self, dtype: str | None = None, quantize: int | None = None, group_size: int = 64):
        """quantize: None, or the bits (4, 8; `mlx_quant.BITS`) linear weights are stored in, in
        groups of `group_size` input weights (32, 64, 128) sharing one scale and bias."""
        dtype = dtype or "float32"
        if dtype not in _DTYPES:
            raise BackendError(f"unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
        if quantize is not None:
            mlx_quant.check_quantization(quantize, group_size)
        self.device = "mlx:" + str(mx.default_device()).removeprefix("Device(").removesuffix(")").replace(", ", ":")
        self.dtype_name, self.dtype = dtype, _DTYPES[dtype]
        self.quantize, self.group_size = quantize, group_size
        self.quantization = mlx_quant.label(quantize, group_size)  # "8bit-g64" or None, for results' info
        # linear layers `prepare_linear` quantised / kept in full precision (Cin not a multiple of group_size)
        self.quantized_layers = self.full_precision_layers = 0
        # "mlx": mx.quantize; "polyasr": the torch backend's schemes, set when a quantised checkpoint
        # (models/quantized_checkpoint.py) is loaded, so the layers quantised on load match the stored ones
        self.scheme = "mlx"

    def __repr__(self):
        quant = f", quantize={self.quantization}" if self.quantization else ""
        return f"MLXBackend(device={self.device}, dtype={self.dtype_name}{quant})"

    # ---- arrays -------------------------------------------------------------------------
    def asarray(self, x, dtype=None):
        a = mx.array(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else mx.array(x)
        if dtype is None and mx.issubdtype(a.dtype, mx.floating):
            dtype = self.dtype
        return a.astype(dtype) if dtype is not None else a

    def param(self, x: np.ndarray, dtype_name: str | None = None):
        """A weight from a checkpoint array; `dtype_name="bfloat16"` marks raw uint16 bf16 bits. A quantised
        checkpoint's weight (`quantized_checkpoint.QuantizedArray`) becomes a QuantizedWeight as stored."""
        if hasattr(x, "qweight"):
            return mlx_quant.from_stored(x)
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
    def prepare_linear(self, w):
        """(Cout, Cin) -> (Cin, Cout): `linear` is then one plain matmul. With `quantize`, a
        `mlx_quant.QuantizedWeight` instead, unless the layer cannot be quantised (Cin not a multiple
        of group_size), which stays (Cin, Cout) in full precision."""
        if isinstance(w, mlx_quant.QuantizedWeight):  # read quantised from a checkpoint
            self.quantized_layers += 1
            return w
        if self.quantize is not None and self.scheme == "polyasr":
            if w.ndim == 2 and mx.issubdtype(w.dtype, mx.floating) and w.shape[1] % self.group_size == 0:
                from polyasr.models.quantized_checkpoint import quantize_host

                self.quantized_layers += 1
                return mlx_quant.from_stored(
                    quantize_host(np.array(w.astype(mx.float32)), self.quantize, self.group_size)
                )
        elif self.quantize is not None:
            qw = mlx_quant.quantize_linear(w, self.quantize, self.group_size)
            if qw is not None:
                self.quantized_layers += 1
                return qw
        self.full_precision_layers += 1
        return mx.contiguous(w.T)

    @staticmethod
    def linear(x, w, b=None):
        """x (..., Cin), w as `prepare_linear` returned it (an array or a QuantizedWeight) -> (..., Cout)."""
        if isinstance(w, mx.array):
            return mx.addmm(b, x, w) if b is not None else x @ w
        return mlx_quant.quantized_linear(x, w, b)

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
        cache[:, :, pos : pos + value.shape[2]] = value
        return cache

    # ---- audio frontend ---------------------------------------------------------------------
    def mel_power(self, samples: np.ndarray, cfg):
        """Mel power frames of host samples (N,), no centring: (1, n_mels, 1 + (N - n_fft) // hop), one
        fewer with `drop_last_frame` (as `kernels.mel.mel_power`)."""
        n_frames = max(0, 1 + (len(samples) - cfg.n_fft) // cfg.hop_length - int(cfg.drop_last_frame))
        x = mx.array(np.ascontiguousarray(samples, dtype=np.float32))[None]
        return mx.transpose(_mel_spectrogram(x, n_frames, cfg, *_frontend_tables(cfg)), (0, 2, 1))

    def log_mel(self, batch: np.ndarray, lengths: np.ndarray, cfg, tables=None):
        """Log-mel features of a zero-padded batch of host signals, each item as if alone: batch (B, N)
        float32, lengths (B,) valid samples -> (features (B, n_mels, T) fp32, zero past each item's
        frames; frame counts (B,) int64 numpy). As the torch backend's `log_mel` (`kernels.mel`'s
        contract); tables: the checkpoint's own (window, filter bank), or None for the config's.

        Pre-emphasis and the per-item centre padding are O(N) host work in numpy; the STFT, mel
        projection, log and normalisation run in MLX.
        """
        lengths = np.asarray(lengths, dtype=np.int64)
        frames = frame_counts(lengths, cfg)
        n_out = int(frame_counts([batch.shape[1]], cfg)[0])
        window, bank = (
            _frontend_tables(cfg) if tables is None else (mx.array(np.asarray(t, np.float32)) for t in tables)
        )
        mel = _mel_spectrogram(mx.array(_padded_signals(batch, lengths, cfg)), n_out, cfg, window, bank)
        valid = mx.arange(n_out)[None, :] < mx.array(frames)[:, None]  # (B, T)
        if cfg.log == "ln":
            x = mel + cfg.log_guard if cfg.log_guard_type == "add" else mx.maximum(mel, cfg.log_guard)
            feats = mx.log(x if cfg.log_clamp_max is None else mx.minimum(x, cfg.log_clamp_max))
        else:  # Whisper: floor at each item's max over its own frames - 8
            peak = mx.max(mx.where(valid[:, :, None], mel, 0.0), axis=(1, 2), keepdims=True)
            feats = self.whisper_log(mel, mx.log10(mx.maximum(peak, cfg.log_guard)), cfg.log_guard)
        if cfg.normalize == "per_feature":
            keep = valid[:, :, None]
            n = mx.array(frames.astype(np.float32))[:, None, None]
            mean = mx.sum(mx.where(keep, feats, 0.0), axis=1, keepdims=True) / n
            var = mx.sum(mx.where(keep, mx.square(feats - mean), 0.0), axis=1, keepdims=True) / (n - 1)
            feats = (feats - mean) / (mx.nan_to_num(mx.sqrt(var), nan=0.0) + NORM_STD_EPS)
        return mx.transpose(mx.where(valid[:, :, None], feats, 0.0), (0, 2, 1)), frames

    @staticmethod
    def whisper_log(mel, log_max, guard: float = 1e-10):
        """log10(max(mel, guard)) floored at log_max - 8, then (x + 4) / 4; log_max a scalar or broadcastable."""
        x = mx.log10(mx.maximum(mel, guard))
        return (mx.maximum(x, log_max - 8.0) + 4.0) / 4.0

    @staticmethod
    def pad_last(x, n: int, value: float = 0.0):
        return mx.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n)], constant_values=value)

    # ---- Conformer ops (GigaAM, Parakeet; Qwen3-ASR's audio encoder) -------------------------------
    @staticmethod
    def conv2d(x, w, b=None, stride: int = 1, padding: int = 0, groups: int = 1):
        """Image-layout conv as the torch backend's: x (B, Cin, H, W), w (Cout, Cin / groups, kh, kw) ->
        (B, Cout, H', W'). MLX convolves channels-last, so the image is transposed in and out."""
        y = mx.conv2d(
            mx.transpose(x, (0, 2, 3, 1)), mx.transpose(w, (0, 2, 3, 1)), stride=stride, padding=padding, groups=groups
        )
        y = mx.transpose(y + b if b is not None else y, (0, 3, 1, 2))
        return y

    @staticmethod
    def depthwise_conv1d(x, w, b=None, padding: int = 0):
        """Per-channel conv along time: x (B, T, C), w (C, K) -> (B, T + 2 * padding - K + 1, C)."""
        y = mx.conv1d(x, w[:, :, None], padding=padding, groups=w.shape[0])
        return y + b if b is not None else y

    def glu_dwconv_silu(self, x, w, b=None, keep=None, ln=None, eps: float = 1e-5):
        """GLU -> zero frames outside `keep` -> depthwise conv ('same') -> LayerNorm (ln) -> SiLU, as the
        torch backend's op; lazy evaluation lets MLX fuse the elementwise steps."""
        x = self.glu(x)
        if keep is not None:
            x = self.zero_masked(x, keep[:, :, None])
        x = self.depthwise_conv1d(x, w, b, padding=(w.shape[1] - 1) // 2)
        if ln is not None:
            x = self.layer_norm(x, ln[0], ln[1], eps)
        return self.silu(x)

    def rel_pos_attention(self, q, k, v, pos, bias_u, bias_v, *, mask=None):
        """Transformer-XL relative-position attention, as the torch backend's: q, k, v (B, H, T, D),
        pos (H, 2T-1, D) for distances T-1 .. -(T-1), bias_u / bias_v (H, 1, D), mask bool (B, 1, 1, T).

        The positional term is computed for all 2T-1 distances, then shifted into place by slicing
        its flattened rows ([i, j] of the result is [i, T-1-i+j] of the full matrix: flat offset
        T-1 + i (2T-2) + j), and handed to the fused SDPA as its additive mask.
        """
        b, h, t, d = q.shape
        full = (q + bias_v) @ mx.swapaxes(pos, -1, -2)  # (B, H, T, 2T-1)
        if t == 1:
            shifted = full
        else:
            flat = full.reshape(b, h, t * (2 * t - 1))[..., t - 1 : t - 1 + t * (2 * t - 2)]
            shifted = flat.reshape(b, h, t, 2 * t - 2)[..., :t]
        bias = shifted * (d**-0.5)
        if mask is not None:
            bias = mx.where(mask, bias, -mx.inf)
        return mx.fast.scaled_dot_product_attention(q + bias_u, k, v, scale=d**-0.5, mask=bias.astype(q.dtype))

    @staticmethod
    def relu(x):
        return mx.maximum(x, 0)

    @staticmethod
    def silu(x):
        return x * mx.sigmoid(x)

    @staticmethod
    def glu(x, axis: int = -1):
        a, g = mx.split(x, 2, axis=axis)
        return a * mx.sigmoid(g)

    @staticmethod
    def log_softmax(x, axis: int = -1):
        return x - mx.logsumexp(x, axis=axis, keepdims=True)

    @staticmethod
    def argmax(x, axis: int = -1):
        return mx.argmax(x, axis=axis)

    @staticmethod
    def max(x, axis: int = -1):
        return mx.max(x, axis=axis)

    def rope_tables(self, length: int, dim: int, base: float):
        """cos, sin (length, dim) in the rotate-half layout, computed in fp32 (as the torch backend's)."""
        inv_freq = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
        freqs = np.outer(np.arange(length, dtype=np.float32), inv_freq)
        emb = mx.array(np.concatenate([freqs, freqs], axis=-1))
        return mx.cos(emb).astype(self.dtype), mx.sin(emb).astype(self.dtype)

    @staticmethod
    def rope(x, cos, sin):
        """x * cos + rotate_half(x) * sin per head of D = cos.shape[-1] channels; x (B, T, H*D) or
        (B, H, T, D), cos / sin (T, D) or broadcastable to x's (B, H, T, D) form."""
        d = cos.shape[-1]
        y = x.reshape(*x.shape[:-1], -1, d) if x.ndim == 3 else x
        c, s = (cos[:, None], sin[:, None]) if x.ndim == 3 else (cos, sin)
        y1, y2 = y[..., : d // 2], y[..., d // 2 :]
        out = y * c + mx.concatenate([-y2, y1], axis=-1) * s
        return out.reshape(x.shape) if x.ndim == 3 else out

    def qk_norm_rope(self, x, w, cos, sin, eps: float = 1e-6):
        """`rope(rms_norm(x, w, eps), cos, sin)` (w None: `rope` alone), as the torch backend's op."""
        return self.rope(x if w is None else self.rms_norm(x, w, eps), cos, sin)

    @staticmethod
    def length_mask(lengths, size: int):
        """(B,) valid lengths (host ints) -> (B, size) bool, True on valid frames."""
        return mx.arange(size)[None, :] < mx.array(np.asarray(lengths, dtype=np.int64))[:, None]

    @staticmethod
    def zero_masked(x, keep):
        return mx.where(keep, x, mx.zeros((), dtype=x.dtype))

    # ---- LLM decoder ops (Qwen3-ASR) -------------------------------------------------------------
    @staticmethod
    def rms_norm(x, w, eps: float = 1e-6):
        """x / sqrt(mean(x^2) + eps) * w; mx.fast.rms_norm accumulates in fp32 for any input dtype."""
        return mx.fast.rms_norm(x, w, eps)

    @staticmethod
    def silu_mul(gate_up):
        gate, up = mx.split(gate_up, 2, axis=-1)
        return gate * mx.sigmoid(gate) * up

    @staticmethod
    def masked_scatter(x, where, rows):
        """x (B, T, C) with the positions where `where` (B, T) is True replaced, in row-major order, by the
        rows of `rows` (N, C); returns a new array."""
        flat = where.reshape(-1)
        index = mx.maximum(mx.cumsum(flat.astype(mx.int32)) - 1, 0)
        picked = rows.astype(x.dtype)[index].reshape(x.shape)
        return mx.where(where[..., None], picked, x)

    @staticmethod
    def concat(xs, axis: int = 0):
        return mx.concatenate(list(xs), axis=axis)

    @staticmethod
    def stack(xs, axis: int = 0):
        return mx.stack(list(xs), axis=axis)

    # ---- decoding-loop ops (the batched TDT loop in models/parakeet/decode.py) ---------------------
    @staticmethod
    def where(cond, a, b):
        return mx.where(cond, a, b)

    @staticmethod
    def sigmoid(x):
        return mx.sigmoid(x)

    @staticmethod
    def tanh(x):
        return mx.tanh(x)

    @staticmethod
    def any(x) -> bool:
        """Whether any element is true, on the host: evaluates what `x` depends on."""
        return bool(mx.any(x).item())

    @staticmethod
    def evaluate(*xs):
        """Compute the graphs behind `xs` now, in one pass (decoding loops call this once per few steps,
        so the lazy graph never spans the whole decode)."""
        mx.eval(*xs)


def _padded_signals(batch: np.ndarray, lengths: np.ndarray, cfg) -> np.ndarray:
    """(B, N) signals -> pre-emphasised, centre-padded (B, N + 2 * (n_fft // 2)) float32, each item padded
    at its own end (reflect mirrors its own last samples), zeros past it: `kernels.mel._pad`'s rule."""
    half = cfg.n_fft // 2 if cfg.center else 0
    out = np.zeros((batch.shape[0], batch.shape[1] + 2 * half), dtype=np.float32)
    for i, n in enumerate(lengths.tolist()):
        x = np.asarray(batch[i, :n], dtype=np.float32)
        if cfg.preemphasis is not None and n:
            x = np.concatenate([x[:1], x[1:] - np.float32(cfg.preemphasis) * x[:-1]])
        if half and cfg.pad_mode == "reflect":
            if n <= half:
                raise ValueError(f"reflect padding needs more than n_fft // 2 = {half} samples per item, got {n}")
            x = np.pad(x, half, mode="reflect")
        elif half:
            x = np.pad(x, half)
        out[i, : x.shape[0]] = x
    return out


def _mel_spectrogram(x, n_frames: int, cfg, window, bank):
    """Signals x (B, M) -> fb @ |rfft(frames * window)| ** power for frames 0 .. n_frames-1 at hop
    spacing: (B, n_frames, n_mels)."""
    b, m = x.shape
    if n_frames <= 0:
        return mx.zeros((b, 0, bank.shape[0]))
    frames = mx.as_strided(mx.contiguous(x), (b, n_frames, cfg.n_fft), (m, cfg.hop_length, 1))
    spec = mx.fft.rfft(frames * window, n=cfg.n_fft)
    power = mx.square(mx.abs(spec)) if cfg.power == 2.0 else mx.abs(spec) ** cfg.power
    return power @ bank.T


@functools.lru_cache(maxsize=16)
def _frontend_tables(cfg):
    """The analysis window (n_fft,) and mel bank (n_mels, F) of `cfg`, as fp32 MLX arrays."""
    return tuple(mx.array(t) for t in tables(cfg))
