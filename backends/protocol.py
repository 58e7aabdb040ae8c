"""The backend contract: every op model code calls, documented once.

A backend is an object with the attributes and methods of `Backend` below. Models are written
against it (`B.linear(x, w)`, never `torch.nn.functional.linear`), so a model runs on any
backend that implements it. `TorchBackend` (`backends/torch.py`: CPU, CUDA, optionally Triton
kernels) and `MLXBackend` (`backends/mlx.py`) do; ops that are the same composition of other ops
on every backend are written once in `backends/composed.py` (`ComposedOps`), which both inherit.
`tests/backends/test_ops.py` checks every member here on every available backend against a
float64 numpy reference: what a new backend must pass.

Arrays. An array is the backend's own type (`torch.Tensor`, `mx.array`); nothing converts per
op. Besides the ops, model code uses only what torch and MLX arrays share: `.shape`, `.ndim`,
`.dtype` (compared with the backend's own dtypes only), basic and integer-array indexing
(`x[:, :n]`, `x[rows, cols]`, `x[..., None]`), `x.reshape(*shape)`, `x.max()`, arithmetic
`+ - * /` and comparisons `< <= == !=` between arrays and with Python scalars (broadcasting
as numpy), and `& | ~` on boolean arrays.

Layouts. Sequences are channels-last, `(B, T, C)`; attention heads are `(B, H, T, D)`; the two
image-layout conv stems take `(B, C, H, W)`. Dtypes: float ops run in the array's dtype, which
models keep at the backend's compute dtype (`dtype`, by `asarray` / `param` / `cast`); masks are
boolean arrays, True where the value is kept (a valid frame, a visible key); indices are
integer arrays (the integer width is the backend's).

Laziness. An op may return before its result is computed (MLX builds a graph; CUDA queues
kernels). Results are only guaranteed to exist after `to_numpy`, `any` or `evaluate`, which are
the only ops that wait. Models call `evaluate` where a stage ends (timings) and inside long
decoding loops (so a lazy graph never spans the whole loop).

In place. No op writes into its inputs except `cache_write` (documented there). An op may
return a view of its input (`split_heads`, `transpose`, `split`, `contiguous` of a contiguous
array) or reuse a temporary it made itself; callers never write into what an op returned
other than through `cache_write`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

import numpy as np

Array = Any  # the backend's own array type
DType = Any  # the backend's own dtype object


@runtime_checkable
class Backend(Protocol):
    """The op set every model is written against. Members are grouped as the models use them."""

    # ---- identity and capability flags --------------------------------------------------------
    name: str
    """Short name of the implementation family ("torch", "mlx"), for messages and reprs."""
    device: Any
    """Where arrays live; `str(device)` names it for results ("cpu", "cuda:0", "mlx:cpu")."""
    dtype: DType
    """The compute dtype float arrays are kept in (the backend's dtype object)."""
    dtype_name: str
    """`dtype` by name: "float32" | "float16" | "bfloat16"."""
    kernels: str
    """Which implementation the hot ops run, reported in results' info: "torch" (plain torch),
    "triton" (our Triton kernels, `kernel_dispatch`), "mlx"."""
    decode_on_host: bool
    """Capability flag: True when a sequential, data-dependent decoding loop (Parakeet's greedy
    TDT) should run in the C++ extension on host copies rather than as backend ops. True where
    arrays already live in host memory and every op runs eagerly (torch on the CPU): a loop of
    tiny ops then pays the dispatch cost per step and C++ is faster. False where the batched
    loop on backend ops keeps the data on the device and evaluates a few steps at a time (CUDA,
    MLX)."""
    host_threads: int
    """Threads a loop in the C++ extension may use on the host (Parakeet's greedy TDT splits a batch's
    items over them; results do not depend on the count): the backend's own CPU budget, read when
    asked, so it follows what the user set (torch's intra-op threads); 1 where no loop runs there."""
    max_pass_rows: int | None
    """Capability hint: the most sequence rows (batch x positions) one whole-sequence pass (an
    encoder) should take at once; a larger batch runs in slices of whole sequences, or None for no
    limit. On the CPU a GEMM runs at its rate with well under a thousand rows, and more rows only
    push each layer's activations out of the cache (Whisper base's encoder: one 30 s window per
    pass costs ~30% less per window than 16 in one); accelerators need the batch to fill them."""
    small_blocks: bool
    """Capability hint: True when models should keep the arrays one op makes per call to a few
    megabytes, splitting their largest intermediates (a conv stem's first stage) into pieces where
    they can. Torch on the CPU: glibc's malloc maps a block over its mmap threshold (32 MB at most)
    afresh at every allocation and unmaps it on free, so each call faults its pages in one by one
    (microseconds a page in a VM), while blocks under it reuse the heap's pages. False where the
    allocator keeps freed memory for reuse and large ops fill the device better (CUDA, MLX)."""
    quantization: str | None
    """Weight quantisation of linear layers as a label naming the scheme, reported as
    `info["quantize"]`, or None for full precision: "<bits>bit-g<group>" for affine groups of that
    many input weights (MLX's `mx.quantize`, torch's 4 bits), "8bit-channel" for symmetric int8 with
    one scale per output channel (torch's 8 bits). A backend loading a quantised checkpoint
    (`get_backend(checkpoint_scheme=)`) reports the checkpoint's label."""
    quantized_layers: int
    """How many linear weights `prepare_linear` returned quantised, those read quantised from a
    checkpoint included (0 without quantisation)."""
    full_precision_layers: int
    """How many linear weights `prepare_linear` returned in full precision: with quantisation, the
    layers it cannot take (input width not a multiple of the group size); without, every one."""

    # ---- arrays -------------------------------------------------------------------------------
    def asarray(self, x: Any, dtype: DType | None = None) -> Array:
        """Host data (numpy array, nested lists, scalars) -> an array on this backend. Float data
        takes `dtype` or else the compute dtype; integer and bool data keep their own dtype unless
        `dtype` is given. The result may share memory with a numpy `x` (torch on the CPU does):
        callers do not write into `x` afterwards."""

    def param(self, x: np.ndarray, dtype_name: str | None = None) -> Array:
        """A checkpoint tensor (numpy, possibly a read-only memory map) -> a weight on this backend,
        float data in the compute dtype. `dtype_name="bfloat16"` marks `x` as raw uint16 bf16 bits
        (numpy has no bf16). The result may share memory with `x`; weights are never written.
        A quantised checkpoint's linear weight (`quant_layout.QuantizedArray`) becomes the object
        `prepare_linear` returns for a quantised layer, holding exactly the stored values (the
        backend was made with the checkpoint's bits and group size)."""

    def to_numpy(self, x: Array) -> np.ndarray:
        """An array -> a host numpy array (waits for it): float data as float32, integer and bool
        data with their own dtype."""

    def cast(self, x: Array) -> Array:
        """A float array in the compute dtype (frontends compute in fp32, the network in `dtype`)."""

    def zeros(self, shape: Sequence[int], dtype: DType | None = None) -> Array:
        """A new array of zeros, in `dtype` or the compute dtype."""

    def empty(self, shape: Sequence[int]) -> Array:
        """A new array in the compute dtype whose values are unspecified: for buffers every element
        of which is written before it is read (a KV cache read up to its filled length). Zeroing a
        large buffer touches every page up front, and most of a cache's positions are never reached."""

    def contiguous(self, x: Array) -> Array:
        """`x` laid out densely in row-major order (a copy only when it is not already)."""

    def synchronize(self) -> None:
        """Wait until all queued device work is done (a no-op where ops run eagerly on the host)."""

    def no_grad(self) -> AbstractContextManager:
        """A context in which ops record nothing for gradients (inference only)."""

    def evaluate(self, *xs: Array) -> None:
        """Compute `xs` (and what they depend on) now: the sync point for stage timings and for
        decoding loops every few steps. Waits for the device; MLX evaluates its lazy graph here."""

    # ---- layers -------------------------------------------------------------------------------
    def prepare_linear(self, w: Array, many_rows: bool | int = False) -> Any:
        """A (Cout, Cin) checkpoint weight -> the object `linear` takes, in the layout this backend
        multiplies fastest (once, at load time). Opaque to models: it may be transposed, packed, or
        a quantised structure (see `quantization`); models pass it only to `linear`. A weight
        `param` returned quantised passes through unchanged. `many_rows`: every call multiplies a
        whole sequence (an encoder layer over its frames), never one decoder row at a time, so the
        layout may favour large products over single rows: True where the sequence's length
        follows the audio, or, where the family fixes it, the fewest rows a call multiplies
        (Whisper's encoder: one 1500-frame window), which lets a backend choose its GEMM for that
        size."""

    def linear(self, x: Array, w: Any, b: Array | None = None) -> Array:
        """x (..., Cin) @ W^T + b -> (..., Cout), with w as `prepare_linear` returned it, b (Cout,)."""

    def conv1d(self, x: Array, w: Array, b: Array | None = None, stride: int = 1, padding: int = 0) -> Array:
        """Channels-last 1-D convolution (cross-correlation): x (B, T, Cin), w (Cout, Cin, K) (the
        checkpoint's layout), b (Cout,) -> (B, (T + 2 * padding - K) // stride + 1, Cout);
        `padding` zeros on both ends."""

    def conv2d(
        self, x: Array, w: Array, b: Array | None = None, stride: int = 1, padding: int = 0, groups: int = 1
    ) -> Array:
        """Image-layout 2-D convolution: x (B, Cin, H, W), w (Cout, Cin / groups, kh, kw), b (Cout,) ->
        (B, Cout, (H + 2p - kh) // s + 1, (W + 2p - kw) // s + 1). `stride` and `padding` apply to
        both axes; groups = Cin is depthwise. Not channels-last: its users are conv stems over
        (time, frequency) that flatten (Cout, W') per frame right after."""

    def prepare_conv2d(self, w: Array) -> Array:
        """A (Cout, Cin, kh, kw) weight `conv2d_gelu` takes -> the same values and shape in the memory
        layout this backend convolves fastest (once, at load time), so no call converts it again."""

    def conv2d_gelu(self, x: Array, w: Array, b: Array | None = None, stride: int = 1, padding: int = 0) -> Array:
        """gelu(conv2d(x, w, b, stride, padding)): a conv stem's layer (groups = 1). The result's
        memory layout is the backend's choice (torch on the CPU keeps it channels-last, the layout
        its next convolution runs fastest on); its shape is conv2d's."""

    def depthwise_conv1d(self, x: Array, w: Array, b: Array | None = None, padding: int = 0) -> Array:
        """Per-channel convolution along time: x (B, T, C), w (C, K), b (C,) ->
        (B, T + 2 * padding - K + 1, C); out[b, t, c] = b[c] + sum_k w[c, k] x[b, t + k - padding, c]."""

    def layer_norm(self, x: Array, w: Array, b: Array, eps: float = 1e-5) -> Array:
        """(x - mean) / sqrt(var + eps) * w + b over the last axis (biased variance); w, b (C,)."""

    def rms_norm(self, x: Array, w: Array, eps: float = 1e-6) -> Array:
        """x / sqrt(mean(x^2) + eps) * w over the last axis, w (C,); the statistic in fp32 for any
        input dtype (Qwen3 / Llama)."""

    def embedding(self, ids: Array, table: Array) -> Array:
        """Rows of `table` (V, C) at integer `ids` of any shape -> ids.shape + (C,)."""

    # ---- elementwise --------------------------------------------------------------------------
    def gelu(self, x: Array) -> Array:
        """Exact GELU, x * Phi(x) = x / 2 * (1 + erf(x / sqrt(2))) (not the tanh approximation)."""

    def relu(self, x: Array) -> Array:
        """max(x, 0)."""

    def silu(self, x: Array) -> Array:
        """x * sigmoid(x)."""

    def sigmoid(self, x: Array) -> Array:
        """1 / (1 + exp(-x))."""

    def tanh(self, x: Array) -> Array:
        """tanh(x)."""

    def glu(self, x: Array, axis: int = -1) -> Array:
        """First half * sigmoid(second half) along `axis`: (..., 2C) -> (..., C)."""

    def silu_mul(self, gate_up: Array) -> Array:
        """SwiGLU's gate: (..., 2F) = [gate | up] -> silu(gate) * up, (..., F)."""

    def log_softmax(self, x: Array, axis: int = -1) -> Array:
        """x - log(sum(exp(x))) along `axis`, stable for any magnitude of x."""

    # ---- attention and positions --------------------------------------------------------------
    def attention(self, q: Array, k: Array, v: Array, *, mask: Array | None = None, causal: bool = False) -> Array:
        """softmax(q k^T / sqrt(D) + mask) v: q (B, H, Tq, D), k / v (B, Hkv, Tk, D) -> (B, H, Tq, D).
        Hkv < H (H a multiple) is grouped-query attention: query head h reads kv head h // (H / Hkv).

        mask: None; a boolean array (True = the key is visible) or an additive float array, either
        broadcastable to (B, H, Tq, Tk): key padding is (B, 1, 1, Tk), per query (B, 1, Tq, Tk).
        causal: query i sees keys j <= i + (Tk - Tq), i.e. the queries are the last Tq positions
        (a decoding step against a KV cache). Every query must see at least one key."""

    def rel_pos_attention(
        self, q: Array, k: Array, v: Array, pos: Array, bias_u: Array, bias_v: Array, *, mask: Array | None = None
    ) -> Array:
        """Transformer-XL relative-position attention (Dai et al. 2019, sec. 3.3), as FastConformer
        uses it: q, k, v (B, H, T, D); pos (H, 2T-1, D), the projected embeddings of distances
        T-1 .. -(T-1); bias_u, bias_v (H, 1, D); mask None or bool (B, 1, 1, T), True on valid keys.

            scores[i, j] = ((q_i + u) . k_j + (q_i + v) . pos[T-1-i+j]) / sqrt(D)
            out = softmax_j(scores masked) @ v                                   (B, H, T, D)"""

    def rope_tables(self, length: int, dim: int, base: float) -> tuple[Array, Array]:
        """Rotary tables for positions 0..length-1: cos, sin (length, dim) in the compute dtype,
        rotate-half layout: angle[p, j] = p * base ** (-2 (j mod dim/2) / dim)."""

    def rope(self, x: Array, cos: Array, sin: Array) -> Array:
        """Rotary embedding, rotate-half layout, per head of D = cos.shape[-1] channels:
        x * cos + rotate_half(x) * sin, rotate_half(u) = concat(-u[D/2:], u[:D/2]).
        x (B, H, T, D), or (B, T, H*D) channels-last (heads not split yet); cos, sin (T, D), or
        per row (B, 1, T, D) with x (B, H, T, D) (left-padded rows at different positions)."""

    def qk_norm_rope(self, x: Array, w: Array | None, cos: Array, sin: Array, eps: float = 1e-6) -> Array:
        """`rope(rms_norm(x, w, eps), cos, sin)`, the norm per head of D channels (Qwen3's q / k
        path); w (D,), or None for `rope` alone. Shapes as `rope`."""

    # ---- Conformer conv module ----------------------------------------------------------------
    def glu_dwconv_silu(
        self,
        x: Array,
        w: Array,
        b: Array | None = None,
        keep: Array | None = None,
        ln: tuple[Array, Array] | None = None,
        eps: float = 1e-5,
    ) -> Array:
        """A Conformer conv module's middle, as one op so a backend can fuse it: x (B, T, 2C) ->
        `glu` -> frames outside `keep` (B, T) bool zeroed -> `depthwise_conv1d` with w (C, K), K
        odd, 'same' padding (K - 1) / 2, bias b (C,) -> `layer_norm` with ln = (gamma, beta), or
        none -> `silu` -> (B, T, C)."""

    # ---- shapes -------------------------------------------------------------------------------
    def split_heads(self, x: Array, n_heads: int) -> Array:
        """(B, T, H*D) -> (B, H, T, D)."""

    def merge_heads(self, x: Array) -> Array:
        """(B, H, T, D) -> (B, T, H*D)."""

    def split(self, x: Array, sizes: Sequence[int], axis: int = -1) -> Sequence[Array]:
        """Consecutive pieces of the given sizes (summing to x.shape[axis]) along `axis`."""

    def transpose(self, x: Array, axes: Sequence[int]) -> Array:
        """Axes permuted: result axis i is x's axis axes[i] (numpy's `transpose(x, axes)`)."""

    def concat(self, xs: Sequence[Array], axis: int = 0) -> Array:
        """Arrays joined along an existing axis."""

    def stack(self, xs: Sequence[Array], axis: int = 0) -> Array:
        """Arrays of one shape joined along a new axis."""

    def repeat_batch(self, x: Array, n: int) -> Array:
        """(B, ...) -> (B*n, ...), each item repeated n times consecutively."""

    def take_rows(self, x: Array, index: Sequence[int] | np.ndarray) -> Array:
        """Rows of x (B, ...) at host integer `index` (n,), repeats allowed -> (n, ...), a new array:
        beams reordered (and finished sequences dropped) as rows of a KV cache."""

    def pad_last(self, x: Array, n: int, value: float = 0.0) -> Array:
        """n entries of `value` appended along the last axis."""

    def cache_write(self, cache: Array, value: Array, pos: int) -> Array:
        """IN PLACE: value (B, H, n, D) written into cache (B, H, Tmax, D) at positions pos..pos+n-1;
        returns `cache` itself (the same object, now updated), so a preallocated KV cache is never
        copied. The only op that writes into an input."""

    def masked_scatter(self, x: Array, where: Array, rows: Array) -> Array:
        """x (B, T, C) with the positions where `where` (B, T) bool is True replaced, in row-major
        order, by the rows of `rows` (N, C), N = number of True; a new array, in x's dtype."""

    # ---- masks, selection, reductions ---------------------------------------------------------
    def length_mask(self, lengths: Sequence[int] | np.ndarray, size: int) -> Array:
        """(B,) valid lengths (host ints) -> (B, size) bool, True at positions < length."""

    def zero_masked(self, x: Array, keep: Array) -> Array:
        """x where `keep` (bool, broadcastable to x) else 0; NaN / Inf outside `keep` do not survive."""

    def where(self, cond: Array, a: Array | float, b: Array | float) -> Array:
        """a where cond else b, elementwise with broadcasting; a / b arrays or Python scalars."""

    def argmax(self, x: Array, axis: int = -1) -> Array:
        """Indices of the maxima along `axis` (an integer array on the device; ties: the first)."""

    def max(self, x: Array, axis: int = -1) -> Array:
        """Maxima along `axis`."""

    def any(self, x: Array) -> bool:
        """Whether any element of a bool array is True, as a host bool (waits for x)."""

    def mean_std(self, x: Array, correction: int = 1, eps: float = 0.0) -> tuple[Array, Array]:
        """Mean and standard deviation over the last axis (statistics pooling): x (..., T) ->
        (mean (...), std (...)), std = sqrt(sum((x - mean)^2) / (T - correction) + eps); correction 1
        is the unbiased estimate (torch.std's default), T > correction."""

    # ---- audio frontend (see kernels/mel.py for the formula and MelConfig) --------------------
    def log_mel(self, batch: np.ndarray, lengths: np.ndarray, cfg: Any, tables: Any = None) -> tuple[Array, np.ndarray]:
        """Log-mel features of a zero-padded batch of host signals, each item exactly as if alone
        (`kernels.mel`'s formula for `cfg`, a `MelConfig`): batch (B, N) float32, lengths (B,)
        valid samples -> (features (B, n_mels, T) float32 on the device, zero past each item's
        frames, T = the frame count of N samples; frame counts (B,) int64 numpy).
        tables: the checkpoint's own (window (n_fft,), filter bank (n_mels, n_fft // 2 + 1)) numpy
        arrays, or None for the config's (`kernels.mel_tables.tables(cfg)`)."""

    def mel_power(self, samples: np.ndarray, cfg: Any) -> Array:
        """Mel power (before the log) of host samples (N,), not centred, pre-emphasised when cfg says:
        fb @ |rfft(frame * window)| ** cfg.power -> (1, n_mels, T) float32,
        T = 1 + (N - n_fft) // hop (one fewer with cfg.drop_last_frame, never negative)."""

    def whisper_log(self, mel: Array, log_max: float, guard: float = 1e-10) -> Array:
        """Whisper's log compression with a given maximum: log10(max(mel, guard)), floored at
        log_max - 8, then (x + 4) / 4; same shape as mel."""

    # ---- sequence ops (Silero VAD) ------------------------------------------------------------
    def stft_magnitude(self, x: Array, window: Array, hop: int) -> Array:
        """|rfft(frame * window)| of the frames of each row, not centred: x (N, L), window (n_fft,)
        -> (N, 1 + (L - n_fft) // hop, n_fft // 2 + 1), in x's dtype."""

    def lstm(
        self, x: Array, w_ih: Array, w_hh: Array, b_ih: Array, b_hh: Array, state: tuple[Array, Array] | None = None
    ) -> tuple[Array, tuple[Array, Array]]:
        """One LSTM layer over a sequence, torch.nn.LSTM's equations and gate order (input, forget,
        cell, output): x (B, T, Cin), w_ih (4H, Cin), w_hh (4H, H), b_ih / b_hh (4H,), state (h, c)
        each (B, H), or None for zeros -> (outputs h_t (B, T, H), (h_T, c_T) each (B, H)). The
        steps are sequential; a lazy backend evaluates every few steps so its graph stays bounded."""


def protocol_members() -> tuple[list[str], list[str]]:
    """(method names, attribute names) of `Backend`, each sorted: what a backend must provide."""
    methods = sorted(n for n, v in vars(Backend).items() if not n.startswith("_") and callable(v))
    attributes = sorted(n for n in Backend.__annotations__ if not n.startswith("_"))
    return methods, attributes
