"""The torch backend (CPU, CUDA): `backends/protocol.py`'s op set on torch tensors.

Each op is documented once, in the protocol; what is written here is how torch computes it,
where that is not obvious. Six ops run one of our Triton kernels when `backends/kernel_dispatch.py`
says so (`kernels="triton"`; opt-in until the kernels are validated on a GPU), and otherwise the
kernel file's plain-torch reference or torch's own op: `attention`, `rel_pos_attention`,
`glu_dwconv_silu`, `rope`, `qk_norm_rope` and `log_mel`. Model code does not change to pick one.
Optional weight quantisation of linear layers (int8 / int4): `torch_quant.py`.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from polyasr.backends import torch_quant
from polyasr.backends.composed import ComposedOps
from polyasr.backends.kernel_dispatch import resolve_kernels
from polyasr.backends.quant_layout import QuantizedArray
from polyasr.backends.torch_packed_linear import WIDE_OUTPUT, PackedLinear, WideLinear, packing_available
from polyasr.errors import BackendError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# A decoder step's queries: one token, or a window's beams folded into its query axis. On the CPU,
# SDPA's flash kernel tiles for long queries; for this few a plain matmul, softmax, matmul over the
# keys takes about half its time (Whisper's cross-attention of one row over 1500 keys).
SHORT_QUERIES = 8
# The positional scores one block of `rel_pos_attention`'s queries makes on the CPU. Whole, they are
# (B, H, T, 2T-1): 36 MB per layer for one minute of Parakeet. glibc maps blocks over its mmap
# threshold (32 MB at most) afresh at every call and faults their pages in one by one; blocks under
# it reuse the heap's pages, and stay in cache between the product and the softmax.
ATTENTION_BLOCK_BYTES = 8 << 20


def _key_mask(mask, batch: int, tk: int):
    """A mask the Triton attention kernels take, as (B, Tk) bool: None for no mask, the key row of a
    boolean key-padding mask (B, 1, 1, Tk); False (not None) for any other mask."""
    if mask is None:
        return None
    if mask.dtype == torch.bool and mask.ndim == 4 and tuple(mask.shape) == (batch, 1, 1, tk):
        return mask[:, 0, 0]
    return False


def _one_channel_conv2d(x, w, b, stride: int, padding: int):
    """conv2d of x (B, 1, H, W) as (B H' W', kh kw [+ 1]) @ (kh kw [+ 1], Cout), the bias folded in as a
    row of the weight: one pass over the (large) result instead of a bias fill and an accumulate.
    Returns (B, Cout, H', W') with channels-last strides."""
    n, cout, kh, kw = x.shape[0], w.shape[0], w.shape[2], w.shape[3]
    xp = F.pad(x[:, 0], (padding,) * 4)
    ho, wo = (xp.shape[1] - kh) // stride + 1, (xp.shape[2] - kw) // stride + 1
    s = xp.stride()
    patches = xp.as_strided((n, ho, wo, kh, kw), (s[0], stride * s[1], stride * s[2], s[1], s[2]))
    patches, weight = patches.reshape(-1, kh * kw), w.reshape(cout, kh * kw).t()
    if b is not None:
        patches = torch.cat([patches, patches.new_ones(patches.shape[0], 1)], dim=1)
        weight = torch.cat([weight, b[None]])
    return (patches @ weight).view(n, ho, wo, cout).permute(0, 3, 1, 2)


class TorchBackend(ComposedOps):
    name = "torch"

    def __init__(
        self,
        device: str = "cpu",
        dtype: str | None = None,
        kernels: str | None = None,
        quantize: int | None = None,
        group_size: int = 64,
        checkpoint_scheme: str | None = None,
    ):
        """kernels: "auto" | "torch" | "triton" | None (= POLYASR_KERNELS, else "auto"); see kernel_dispatch.
        quantize: None, or 8 / 4: linear weights stored in that many bits (`torch_quant`), 4-bit ones in
        groups of `group_size` (32, 64, 128) input weights. checkpoint_scheme: a quantised checkpoint's
        label (`get_backend`); torch's schemes are the ones checkpoints store, so it must equal ours."""
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError("device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu")
        self.device = torch.device(device)
        self.on_cpu = self.device.type == "cpu"
        # fp16 on CPU is slow and inexact in torch: default to fp32 there, fp16 on GPUs (bf16 with
        # 4-bit weights: the int4 GEMM takes nothing else).
        cuda_dtype = "bfloat16" if quantize == 4 else "float16"
        dtype = dtype or (cuda_dtype if self.device.type == "cuda" else "float32")
        if dtype not in _DTYPES:
            raise BackendError(f"unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
        self.dtype_name = dtype
        self.dtype = _DTYPES[dtype]
        self.kernels = resolve_kernels(kernels, self.device.type)  # "torch" | "triton"
        # eager ops on host memory: Parakeet's TDT loop runs faster in C++ than op by op
        self.decode_on_host = self.device.type == "cpu"
        self.max_pass_rows = 2048 if self.on_cpu else None  # see the protocol: cache-sized passes on the CPU
        self.small_blocks = self.on_cpu  # glibc's malloc: blocks over its mmap threshold fault in anew
        self.quantizer = None
        if quantize is not None:
            self.quantizer = torch_quant.Quantizer(quantize, group_size, self.device, self.dtype)
        self.quantization = torch_quant.label(quantize, group_size)  # "8bit-channel", "4bit-g64" or None
        if checkpoint_scheme not in (None, self.quantization):
            raise BackendError(
                f"a quantised checkpoint in scheme {checkpoint_scheme!r} was given to a torch backend that "
                f"quantises as {self.quantization!r}; load it without --quantize / --group-size"
            )
        # linear layers `prepare_linear` quantised / kept in full precision (Cin not a multiple of group_size)
        self.quantized_layers = self.full_precision_layers = 0

    def __repr__(self):
        quant = f", quantize={self.quantization}" if self.quantization else ""
        return f"TorchBackend(device={self.device}, dtype={self.dtype_name}, kernels={self.kernels}{quant})"

    # ---- arrays -------------------------------------------------------------------------
    def asarray(self, x, dtype=None) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else torch.as_tensor(x)
        if dtype is None and t.is_floating_point():
            dtype = self.dtype
        return t.to(device=self.device, dtype=dtype)

    def param(self, x: np.ndarray, dtype_name: str | None = None) -> torch.Tensor:
        # a quantised checkpoint's weight: a QuantizedWeight of exactly the stored values
        if isinstance(x, QuantizedArray):
            if self.quantizer is None:
                raise BackendError(
                    f"quantised tensor {x.name!r} given to a backend without quantize; load the checkpoint with "
                    "AsrEngine.from_model, which takes its bits and group size"
                )
            return self.quantizer.from_stored(x)
        with warnings.catch_warnings():
            # Checkpoint arrays are read-only memory maps; parameters are never written, so
            # sharing the pages (no copy) is what we want, and torch's warning is noise.
            warnings.simplefilter("ignore", UserWarning)
            t = torch.from_numpy(np.ascontiguousarray(x))
        if dtype_name == "bfloat16":
            t = t.view(torch.bfloat16)
        return t.to(device=self.device, dtype=self.dtype if t.is_floating_point() else t.dtype)

    @staticmethod
    def to_numpy(x: torch.Tensor) -> np.ndarray:
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()

    def cast(self, x) -> torch.Tensor:
        return x.to(self.dtype)

    def zeros(self, shape, dtype=None) -> torch.Tensor:
        return torch.zeros(shape, device=self.device, dtype=dtype or self.dtype)

    def empty(self, shape) -> torch.Tensor:
        return torch.empty(shape, device=self.device, dtype=self.dtype)

    @staticmethod
    def contiguous(x):
        return x.contiguous()

    @property
    def host_threads(self) -> int:
        # torch's intra-op threads as the user left them (`torch.set_num_threads`, `polyasr batch
        # --threads`): the TDT loop on the CPU then uses the cores the encoder just used
        return torch.get_num_threads() if self.on_cpu else 1

    def synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @staticmethod
    def no_grad():
        return torch.inference_mode()

    def evaluate(self, *xs):
        # eager: CPU work is already done, CUDA's queue is waited for
        self.synchronize()

    # ---- layers ---------------------------------------------------------------------------
    def prepare_linear(self, w, many_rows: bool | int = False):
        """On CPU, fp32: a weight that multiplies whole sequences (`many_rows`, an encoder layer)
        is packed once, by MKL or oneDNN as its rows say (`PackedLinear`); any other is (Cin, Cout),
        contiguous, because a decoder step is a chain of (1, Cin) GEMVs whose weights come from DRAM
        and MKL streams the transposed layout faster (`docs/architecture.md`), and a vocabulary-wide
        one becomes a `WideLinear`, multiplied by oneDNN when several rows come
        (`torch_packed_linear.py`). GPUs keep (Cout, Cin). With `quantize`, a
        `torch_quant.QuantizedWeight` instead, unless the layer is left in full precision
        (`Quantizer.selects`); a weight read quantised from a checkpoint (`param`) stays as it is."""
        if isinstance(w, torch_quant.QuantizedWeight) or (self.quantizer and self.quantizer.selects(w)):
            self.quantized_layers += 1
            return w if isinstance(w, torch_quant.QuantizedWeight) else self.quantizer.quantize(w)
        self.full_precision_layers += 1
        if not self.on_cpu:
            return w
        if w.dtype == torch.float32 and packing_available():
            if many_rows:
                return PackedLinear(w, rows=None if many_rows is True else many_rows)
            if w.shape[0] >= WIDE_OUTPUT:
                return WideLinear(w.t().contiguous())
        return w.t().contiguous()

    def linear(self, x, w, b=None):
        if isinstance(w, (torch_quant.QuantizedWeight, PackedLinear, WideLinear)):
            return w.linear(x, b)
        if not self.on_cpu:
            return F.linear(x, w, b)
        if x.ndim == 2:
            return torch.addmm(b, x, w) if b is not None else x @ w
        flat = x.reshape(-1, x.shape[-1])
        y = torch.addmm(b, flat, w) if b is not None else flat @ w
        return y.view(*x.shape[:-1], w.shape[1])

    @staticmethod
    def conv1d(x, w, b=None, stride: int = 1, padding: int = 0):
        return F.conv1d(x.transpose(1, 2), w, b, stride=stride, padding=padding).transpose(1, 2)

    @staticmethod
    def conv2d(x, w, b=None, stride: int = 1, padding: int = 0, groups: int = 1):
        return F.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)

    def prepare_conv2d(self, w):
        """CPU: channels-last, the layout `conv2d_gelu` runs oneDNN in; with the weight in the
        checkpoint's layout, each call reordered it first (a copy of the whole weight)."""
        if not self.on_cpu or w.shape[1] == 1:  # a one-channel image is a GEMM over patches instead
            return w
        return w.contiguous(memory_format=torch.channels_last)

    def conv2d_gelu(self, x, w, b=None, stride: int = 1, padding: int = 0):
        """CPU: the result stays channels-last (a strided view of (B, H', W', Cout)), the layout oneDNN
        convolves fastest and the next layer then gets as input; a one-channel image (a spectrogram)
        is one GEMM over its patches instead, which oneDNN's direct kernel for Cin = 1 is not. The
        GELU runs in place: the stem's activations are the largest arrays the encoders make."""
        if not self.on_cpu:
            return F.gelu(F.conv2d(x, w, b, stride=stride, padding=padding))
        if x.shape[1] == 1:
            y = _one_channel_conv2d(x, w, b, stride, padding)
        else:
            y = F.conv2d(x.contiguous(memory_format=torch.channels_last), w, b, stride=stride, padding=padding)
        # in place on the (B, H', W', Cout) storage as one flat array: torch's GELU on the strided
        # channels-last view runs at half the speed
        flat = y.permute(0, 2, 3, 1)
        if not flat.is_contiguous():
            return F.gelu(y)
        torch.ops.aten.gelu_(flat.view(-1))
        return y

    @staticmethod
    def depthwise_conv1d(x, w, b=None, padding: int = 0):
        from polyasr.kernels.dwconv import depthwise_conv1d_ref

        return depthwise_conv1d_ref(x, w, b, padding)

    @staticmethod
    def layer_norm(x, w, b, eps: float = 1e-5):
        # torch.layer_norm, not F.layer_norm: the same kernel without the Python wrapper's checks,
        # which a decoder step pays once per norm per token
        return torch.layer_norm(x, (x.shape[-1],), w, b, eps)

    @staticmethod
    def rms_norm(x, w, eps: float = 1e-6):
        if x.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), w, eps)
        y = x.float()
        y = y * torch.rsqrt(y.square().mean(-1, keepdim=True) + eps)
        return w * y.to(x.dtype)

    @staticmethod
    def embedding(ids, table):
        return F.embedding(ids, table)

    # ---- elementwise (torch's fused ops rather than ComposedOps' compositions) -----------------
    @staticmethod
    def gelu(x):
        return F.gelu(x)

    @staticmethod
    def relu(x):
        return F.relu(x)

    @staticmethod
    def silu(x):
        return F.silu(x)

    @staticmethod
    def sigmoid(x):
        return torch.sigmoid(x)

    @staticmethod
    def tanh(x):
        return torch.tanh(x)

    @staticmethod
    def glu(x, axis: int = -1):
        return F.glu(x, dim=axis)

    @staticmethod
    def silu_mul(gate_up):
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate).mul_(up)  # in place on silu's own temporary

    @staticmethod
    def log_softmax(x, axis: int = -1):
        return F.log_softmax(x, dim=axis)

    # ---- attention and positions ------------------------------------------------------------
    def attention(self, q, k, v, *, mask=None, causal: bool = False):
        """Triton path: the flash kernel for no mask or a boolean key-padding mask (B, 1, 1, Tk);
        other masks (additive, per query, broadcast over the batch) stay on SDPA, with the causal
        band folded into the mask when Tq != Tk."""
        key_mask = _key_mask(mask, q.shape[0], k.shape[2])
        if self.kernels == "triton" and key_mask is not False:
            from polyasr.kernels.attention import attention

            return attention(q, k, v, key_mask=key_mask, causal=causal)
        gqa = k.shape[1] != q.shape[1]
        if self.on_cpu and mask is None and not gqa and q.shape[2] <= SHORT_QUERIES and q.dtype == torch.float32:
            if not causal or q.shape[2] == 1:  # one query sees every key: nothing to mask
                return _short_query_attention(q, k, v)
        if causal and q.shape[2] > 1:
            tq, tk = q.shape[2], k.shape[2]
            if tq == tk and mask is None:
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
            keep = torch.ones(tq, tk, dtype=torch.bool, device=q.device).tril(tk - tq)
            if mask is None or mask.dtype == torch.bool:
                mask = keep if mask is None else mask & keep
            else:
                mask = mask.masked_fill(~keep, -torch.inf)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)

    def rel_pos_attention(self, q, k, v, pos, bias_u, bias_v, *, mask=None):
        """Torch path: `kernels.rel_pos_attention.rel_pos_attention_ref` (the shift as a strided view);
        Triton path: the fused kernel (the shift by index arithmetic), for None or (B, 1, 1, T) masks."""
        key_mask = _key_mask(mask, q.shape[0], k.shape[2])
        if self.kernels == "triton" and key_mask is not False:
            from polyasr.kernels.rel_pos_attention import rel_pos_attention

            return rel_pos_attention(q, k, v, pos, bias_u, bias_v, key_mask=key_mask)
        from polyasr.kernels.rel_pos_attention import rel_pos_attention_ref

        rows = None
        if self.small_blocks:  # blocks of queries whose positional term stays under ATTENTION_BLOCK_BYTES
            b, h, t, _ = q.shape
            rows = max(1, ATTENTION_BLOCK_BYTES // (b * h * 2 * t * q.element_size()))
        return rel_pos_attention_ref(q, k, v, pos, bias_u, bias_v, mask=mask, rows=rows)

    def rope(self, x, cos, sin):
        return self.qk_norm_rope(x, None, cos, sin)

    def qk_norm_rope(self, x, w, cos, sin, eps: float = 1e-6):
        """`kernels.rope.rope_ref`; with Triton kernels on, one kernel reads x once and writes once."""
        if self.kernels == "triton":
            from polyasr.kernels.rope import rope

            return rope(x, cos, sin, w, eps)
        from polyasr.kernels.rope import rope_ref

        return rope_ref(x, cos, sin, w, eps)

    # ---- Conformer conv module ------------------------------------------------------------------
    def glu_dwconv_silu(self, x, w, b=None, keep=None, ln=None, eps: float = 1e-5):
        """Triton path: one fused kernel (`kernels.dwconv`); else ComposedOps' composition, which
        `kernels.dwconv.dwconv_glu_silu_ref` equals bit for bit."""
        if self.kernels == "triton":
            from polyasr.kernels.dwconv import dwconv_glu_silu

            return dwconv_glu_silu(x, w, b, keep, ln, eps)
        return super().glu_dwconv_silu(x, w, b, keep, ln, eps)

    # ---- shapes ---------------------------------------------------------------------------
    @staticmethod
    def split(x, sizes, axis: int = -1):
        return torch.split(x, list(sizes), dim=axis)

    @staticmethod
    def transpose(x, axes):
        return x.permute(*axes)

    @staticmethod
    def concat(xs, axis: int = 0):
        return torch.cat(list(xs), dim=axis)

    @staticmethod
    def stack(xs, axis: int = 0):
        return torch.stack(list(xs), dim=axis)

    @staticmethod
    def repeat_batch(x, n: int):
        return x.repeat_interleave(n, dim=0)

    @staticmethod
    def take_rows(x, index):
        return x.index_select(0, torch.as_tensor(np.asarray(index, dtype=np.int64), device=x.device))

    @staticmethod
    def pad_last(x, n: int, value: float = 0.0):
        return F.pad(x, (0, n), value=value)

    @staticmethod
    def masked_scatter(x, where, rows):
        return x.masked_scatter(where[..., None], rows.to(x.dtype))

    # ---- masks, selection, reductions -------------------------------------------------------------
    @staticmethod
    def zero_masked(x, keep):
        return x.masked_fill(~keep, 0.0)

    @staticmethod
    def where(cond, a, b):
        return torch.where(cond, a, b)

    @staticmethod
    def argmax(x, axis: int = -1):
        return x.argmax(dim=axis)

    @staticmethod
    def max(x, axis: int = -1):
        return x.amax(dim=axis)

    @staticmethod
    def any(x) -> bool:
        return bool(x.any())

    @staticmethod
    def mean_std(x, correction: int = 1, eps: float = 0.0):
        if eps == 0.0:
            std, mean = torch.std_mean(x, dim=-1, correction=correction)
            return mean, std
        var, mean = torch.var_mean(x, dim=-1, correction=correction)
        return mean, torch.sqrt(var + eps)

    # ---- audio frontend ---------------------------------------------------------------------
    def log_mel(self, batch: np.ndarray, lengths: np.ndarray, cfg, tables=None):
        """`kernels.mel.log_mel_ref`; with Triton kernels on (the config's own tables, power 1 or 2)
        the fused frontend `kernels.mel_kernel.log_mel`."""
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        n = torch.from_numpy(np.asarray(lengths, dtype=np.int64)).to(self.device)
        if self.kernels == "triton" and tables is None and cfg.power in (1.0, 2.0):
            from polyasr.kernels.mel_kernel import log_mel

            feats, frames = log_mel(x, cfg, n)
        else:
            from polyasr.kernels.mel import log_mel_ref

            feats, frames = log_mel_ref(x, cfg, n, tables)
        return feats, frames.cpu().numpy()

    def mel_power(self, samples: np.ndarray, cfg):
        from polyasr.kernels.mel import mel_power

        x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)).to(self.device)[None]
        return mel_power(x, cfg, center=False)

    @staticmethod
    def whisper_log(mel, log_max: float, guard: float = 1e-10):
        from polyasr.kernels.mel import whisper_log

        return whisper_log(mel, log_max, guard)

    # ---- sequence ops (Silero VAD) --------------------------------------------------------------
    @staticmethod
    def stft_magnitude(x, window, hop: int):
        """|rfft(frame * window)| of the frames of each row, not centred: x (N, L), window (n_fft,) ->
        (N, 1 + (L - n_fft) // hop, n_fft // 2 + 1). The magnitude as sqrt(re^2 + im^2) from the real
        and imaginary views: several times faster on CPU than complex `abs` or a norm over the pairs."""
        spec = torch.fft.rfft(x.unfold(-1, window.shape[0], hop) * window)
        return torch.addcmul(spec.real.square(), spec.imag, spec.imag).sqrt_()

    @staticmethod
    def lstm(x, w_ih, w_hh, b_ih, b_hh, state=None):
        """One LSTM layer over a sequence, torch.nn.LSTM's equations and gate order (input, forget, cell,
        output): x (B, T, Cin), w_ih (4H, Cin), w_hh (4H, H), b_ih / b_hh (4H,), state (h, c) each (B, H)
        or None for zeros -> (outputs h_t (B, T, H), (h_T, c_T) each (B, H)).

        One `torch.lstm` call: the time loop runs in C++ (cuDNN on CUDA), with the input projection of
        all T steps done as one GEMM up front.
        """
        if state is None:
            zeros = x.new_zeros(1, x.shape[0], w_hh.shape[1])
            hx = (zeros, zeros)
        else:
            hx = (state[0][None], state[1][None])
        out, h, c = torch.lstm(x, hx, (w_ih, w_hh, b_ih, b_hh), True, 1, 0.0, False, False, True)
        return out, (h[0], c[0])


def _short_query_attention(q, k, v):
    """Unmasked attention for at most SHORT_QUERIES queries, in fp32: the (B, H, Tq, Tk) scores are small."""
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5)
    return torch.matmul(torch.softmax(scores, dim=-1), v)
