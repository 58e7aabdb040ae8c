"""The MLX backend (Apple Silicon; `mlx[cpu]` on Linux): `backends/protocol.py`'s op set on
`mlx.core` / `mlx.fast`.

Each op is documented once, in the protocol; what is written here is how MLX computes it, where
that is not obvious. Arrays are `mx.array`s in the protocol's layouts, so model code runs
unchanged. MLX is lazy: nothing is computed until a value is read on the host (`to_numpy`, `any`)
or `evaluate` is called, which the decoding loops do once per step or per few steps.
Nothing here imports torch: weights arrive as numpy views of the checkpoint files, the
frontend's tables come from `kernels/mel_tables.py` (numpy). Optional weight quantisation:
`mlx_quant.py`. `docs/architecture.md` lists how each op maps onto MLX.
"""

from __future__ import annotations

import contextlib
import functools
import math

import mlx.core as mx
import numpy as np

from polyasr.backends import mlx_quant
from polyasr.backends.composed import ComposedOps
from polyasr.backends.quant_layout import QuantizedArray, quantize_host
from polyasr.errors import BackendError
from polyasr.kernels.mel_tables import NORM_STD_EPS, frame_counts, tables

_DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


class MLXBackend(ComposedOps):
    name = "mlx"
    kernels = "mlx"
    # the batched device loop evaluates a few steps at a time; no host copies
    decode_on_host = False
    # unified memory on a GPU: the batch fills it
    max_pass_rows = None
    host_threads = 1  # the TDT loop runs on MLX ops, not on the host
    small_blocks = False  # MLX's allocator keeps freed buffers for reuse

    def __init__(
        self,
        dtype: str | None = None,
        quantize: int | None = None,
        group_size: int = 64,
        checkpoint_scheme: str | None = None,
    ):
        """quantize: None, or the bits (4, 8) linear weights are stored in, in groups of `group_size`
        input weights (32, 64, 128) sharing one scale and bias: `mx.quantize`'s scheme, or with
        `checkpoint_scheme` (a quantised checkpoint's label, `get_backend`) the checkpoint's own
        (`quant_layout.quantize_host`), so layers quantised here match the stored ones."""
        dtype = dtype or "float32"
        if dtype not in _DTYPES:
            raise BackendError(f"unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
        if quantize is not None:
            mlx_quant.check_quantization(quantize, group_size)
        self.device = "mlx:" + str(mx.default_device()).removeprefix("Device(").removesuffix(")").replace(", ", ":")
        self.dtype_name, self.dtype = dtype, _DTYPES[dtype]
        self.quantize, self.group_size = quantize, group_size
        self.checkpoint_scheme = checkpoint_scheme
        # "8bit-g64" (or the checkpoint's "8bit-channel") or None, for results' info
        self.quantization = checkpoint_scheme or mlx_quant.label(quantize, group_size)
        # linear layers `prepare_linear` quantised / kept in full precision (Cin not a multiple of group_size)
        self.quantized_layers = self.full_precision_layers = 0

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
        # a quantised checkpoint's weight: a QuantizedWeight of exactly the stored values
        if isinstance(x, QuantizedArray):
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

    def empty(self, shape):
        # MLX has no uninitialised allocation; its zeros are lazy, filled only where evaluated
        return mx.zeros(shape, dtype=self.dtype)

    @staticmethod
    def contiguous(x):
        return mx.contiguous(x)

    @staticmethod
    def synchronize():
        mx.synchronize()

    @staticmethod
    def no_grad():
        return contextlib.nullcontext()  # MLX records no graph for gradients unless asked

    @staticmethod
    def evaluate(*xs):
        mx.eval(*xs)

    # ---- layers ---------------------------------------------------------------------------
    def prepare_linear(self, w, many_rows: bool | int = False):
        """(Cout, Cin) -> (Cin, Cout) for any row count: `linear` is then one plain matmul. With `quantize`, a
        `mlx_quant.QuantizedWeight` instead, unless the layer cannot be quantised (Cin not a multiple
        of group_size), which stays (Cin, Cout) in full precision; a weight read quantised from a
        checkpoint (`param`) stays as it is."""
        qw = w if isinstance(w, mlx_quant.QuantizedWeight) else self._quantize(w)
        if qw is not None:
            self.quantized_layers += 1
            return qw
        self.full_precision_layers += 1
        return mx.contiguous(w.T)

    def _quantize(self, w) -> mlx_quant.QuantizedWeight | None:
        if self.quantize is None:
            return None
        if self.checkpoint_scheme is None:
            return mlx_quant.quantize_linear(w, self.quantize, self.group_size)
        if w.ndim != 2 or not mx.issubdtype(w.dtype, mx.floating) or w.shape[1] % self.group_size:
            return None
        return mlx_quant.from_stored(quantize_host(np.array(w.astype(mx.float32)), self.quantize, self.group_size))

    @staticmethod
    def linear(x, w, b=None):
        if isinstance(w, mx.array):
            return mx.addmm(b, x, w) if b is not None else x @ w
        return mlx_quant.quantized_linear(x, w, b)

    @staticmethod
    def conv1d(x, w, b=None, stride: int = 1, padding: int = 0):
        # MLX weights are (Cout, K, Cin): the torch-layout weight is transposed per call
        y = mx.conv1d(x, w.transpose(0, 2, 1), stride=stride, padding=padding)
        return y + b if b is not None else y

    @staticmethod
    def conv2d(x, w, b=None, stride: int = 1, padding: int = 0, groups: int = 1):
        # MLX convolves channels-last: the image and the weight are transposed in, the result out
        y = mx.conv2d(
            mx.transpose(x, (0, 2, 3, 1)), mx.transpose(w, (0, 2, 3, 1)), stride=stride, padding=padding, groups=groups
        )
        return mx.transpose(y + b if b is not None else y, (0, 3, 1, 2))

    @staticmethod
    def prepare_conv2d(w):
        return w  # `conv2d` transposes per call: a prepared copy would change the shape models see

    @staticmethod
    def depthwise_conv1d(x, w, b=None, padding: int = 0):
        y = mx.conv1d(x, w[:, :, None], padding=padding, groups=w.shape[0])
        return y + b if b is not None else y

    @staticmethod
    def layer_norm(x, w, b, eps: float = 1e-5):
        return mx.fast.layer_norm(x, w, b, eps)

    @staticmethod
    def rms_norm(x, w, eps: float = 1e-6):
        return mx.fast.rms_norm(x, w, eps)  # accumulates in fp32 for any input dtype

    @staticmethod
    def embedding(ids, table):
        return table[ids]

    # ---- elementwise (silu, glu, silu_mul: ComposedOps) --------------------------------------------
    @staticmethod
    def gelu(x):
        return x * 0.5 * (1.0 + mx.erf(x * (1.0 / math.sqrt(2.0))))

    @staticmethod
    def relu(x):
        return mx.maximum(x, 0)

    @staticmethod
    def sigmoid(x):
        return mx.sigmoid(x)

    @staticmethod
    def tanh(x):
        return mx.tanh(x)

    @staticmethod
    def log_softmax(x, axis: int = -1):
        return x - mx.logsumexp(x, axis=axis, keepdims=True)

    # ---- attention and positions (rope, qk_norm_rope, rope_tables: ComposedOps) ----------------------
    @staticmethod
    def attention(q, k, v, *, mask=None, causal: bool = False):
        """Boolean and causal masks become one additive mask for the fused SDPA (which does GQA)."""
        tq, tk = q.shape[2], k.shape[2]
        if mask is not None and mask.dtype == mx.bool_:
            mask = mx.where(mask, 0.0, -mx.inf).astype(q.dtype)
        if causal and tq > 1:
            keep = mx.arange(tk)[None, :] <= mx.arange(tq)[:, None] + (tk - tq)
            causal_mask = mx.where(keep, 0.0, -mx.inf).astype(q.dtype)
            mask = causal_mask if mask is None else mask + causal_mask
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=q.shape[-1] ** -0.5, mask=mask)

    def rel_pos_attention(self, q, k, v, pos, bias_u, bias_v, *, mask=None):
        """The positional term is computed for all 2T-1 distances, then shifted into place by slicing
        its flattened rows ([i, j] of the result is [i, T-1-i+j] of the full matrix: flat offset
        T-1 + i (2T-2) + j), and handed to the fused SDPA as its additive mask."""
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

    # ---- shapes (split_heads, merge_heads, cache_write: ComposedOps) -------------------------------
    @staticmethod
    def split(x, sizes, axis: int = -1):
        return mx.split(x, list(np.cumsum(sizes)[:-1]), axis=axis)

    @staticmethod
    def transpose(x, axes):
        return x.transpose(*axes)

    @staticmethod
    def concat(xs, axis: int = 0):
        return mx.concatenate(list(xs), axis=axis)

    @staticmethod
    def stack(xs, axis: int = 0):
        return mx.stack(list(xs), axis=axis)

    @staticmethod
    def repeat_batch(x, n: int):
        return mx.repeat(x, n, axis=0)

    @staticmethod
    def take_rows(x, index):
        return mx.take(x, mx.array(np.asarray(index, dtype=np.int32)), axis=0)

    @staticmethod
    def pad_last(x, n: int, value: float = 0.0):
        return mx.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n)], constant_values=value)

    @staticmethod
    def masked_scatter(x, where, rows):
        # row i of the result takes rows[number of True before it]: a cumulative sum, then a gather
        if rows.shape[0] == 0:  # nothing to place (mx cannot gather from an empty array)
            return x
        flat = where.reshape(-1)
        index = mx.maximum(mx.cumsum(flat.astype(mx.int32)) - 1, 0)
        picked = rows.astype(x.dtype)[index].reshape(x.shape)
        return mx.where(where[..., None], picked, x)

    # ---- masks, selection, reductions (length_mask: ComposedOps) -----------------------------------
    @staticmethod
    def zero_masked(x, keep):
        return mx.where(keep, x, mx.zeros((), dtype=x.dtype))

    @staticmethod
    def where(cond, a, b):
        return mx.where(cond, a, b)

    @staticmethod
    def argmax(x, axis: int = -1):
        return mx.argmax(x, axis=axis)

    @staticmethod
    def max(x, axis: int = -1):
        return mx.max(x, axis=axis)

    @staticmethod
    def any(x) -> bool:
        return bool(mx.any(x).item())

    @staticmethod
    def mean_std(x, correction: int = 1, eps: float = 0.0):
        return mx.mean(x, axis=-1), mx.sqrt(mx.var(x, axis=-1, ddof=correction) + eps)

    # ---- audio frontend ---------------------------------------------------------------------
    def log_mel(self, batch: np.ndarray, lengths: np.ndarray, cfg, tables=None):
        """Pre-emphasis and the per-item centre padding are O(N) host work in numpy; the STFT, mel
        projection, log and normalisation run in MLX."""
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

    def mel_power(self, samples: np.ndarray, cfg):
        n_frames = max(0, 1 + (len(samples) - cfg.n_fft) // cfg.hop_length - int(cfg.drop_last_frame))
        x = np.asarray(samples, dtype=np.float32)
        if cfg.preemphasis is not None and len(x):
            x = np.concatenate([x[:1], x[1:] - np.float32(cfg.preemphasis) * x[:-1]])
        x = mx.array(np.ascontiguousarray(x))[None]
        return mx.transpose(_mel_spectrogram(x, n_frames, cfg, *_frontend_tables(cfg)), (0, 2, 1))

    @staticmethod
    def whisper_log(mel, log_max, guard: float = 1e-10):
        # log_max may also be an array broadcastable to mel (log_mel's per-item maxima)
        x = mx.log10(mx.maximum(mel, guard))
        return (mx.maximum(x, log_max - 8.0) + 4.0) / 4.0

    # ---- sequence ops (Silero VAD) --------------------------------------------------------------
    @staticmethod
    def stft_magnitude(x, window, hop: int):
        """|rfft(frame * window)| of the frames of each row, not centred: x (N, L), window (n_fft,) ->
        (N, 1 + (L - n_fft) // hop, n_fft // 2 + 1), as the torch backend's op."""
        n, length = x.shape
        frames = mx.as_strided(
            mx.contiguous(x), (n, 1 + (length - window.shape[0]) // hop, window.shape[0]), (length, hop, 1)
        )
        return mx.abs(mx.fft.rfft(frames * window))

    @staticmethod
    def lstm(x, w_ih, w_hh, b_ih, b_hh, state=None):
        """One LSTM layer over a sequence, as the torch backend's op (torch.nn.LSTM's equations, gates in
        the order input, forget, cell, output): x (B, T, Cin), w_ih (4H, Cin), w_hh (4H, H), b_ih / b_hh
        (4H,), state (h, c) each (B, H) or None for zeros -> (outputs (B, T, H), (h_T, c_T)).

        The input projection of all T steps is one matmul; the steps run one compiled cell each, and
        the graph is evaluated every `_LSTM_EVAL_EVERY` steps so it never spans the whole sequence.
        """
        b, t, _ = x.shape
        xp = x @ w_ih.T + (b_ih + b_hh)
        w_hh_t = mx.contiguous(w_hh.T)
        if state is None:
            h = c = mx.zeros((b, w_hh.shape[1]), dtype=x.dtype)
        else:
            h, c = state
        outs = []
        for i in range(t):
            h, c = _lstm_cell(xp[:, i], h, c, w_hh_t)
            outs.append(h)
            if (i + 1) % _LSTM_EVAL_EVERY == 0:
                mx.eval(h, c)
        return mx.stack(outs, axis=1) if outs else mx.zeros((b, 0, w_hh.shape[1]), dtype=x.dtype), (h, c)


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


# The compiled LSTM step of MLXBackend.lstm.
_LSTM_EVAL_EVERY = 128


@mx.compile
def _lstm_cell(xp, h, c, w_hh_t):
    """One LSTM step from the step's input projection xp (B, 4H) (biases included): -> (h, c)."""
    i, f, g, o = mx.split(xp + h @ w_hh_t, 4, axis=-1)
    c = mx.sigmoid(f) * c + mx.sigmoid(i) * mx.tanh(g)
    return mx.sigmoid(o) * mx.tanh(c), c
