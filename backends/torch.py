"""The torch backend: the reference op set (CPU, and CUDA eager).

Arrays are torch tensors in channels-last layout `(B, T, C)`; attention takes
`(B, H, T, D)`. Every op is a thin, allocation-aware wrapper so model code reads the
same on every backend. Kernels in `polyasr.kernels` replace hot ops on CUDA (issue 7):
`attention`, `rel_pos_attention` and `glu_dwconv_silu` run a Triton kernel when
`backends/kernel_dispatch.py` says so (opt-in with `kernels=` / POLYASR_KERNELS until validated on a GPU);
the model code does not change to pick one. Optional weight quantisation: `torch_quant.py`.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from polyasr.backends import torch_quant
from polyasr.backends.kernel_dispatch import resolve_kernels
from polyasr.errors import BackendError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _key_mask(mask, batch: int, tk: int):
    """A mask the Triton attention kernels take, as (B, Tk) bool: None for no mask, the key row of a
    boolean key-padding mask (B, 1, 1, Tk); False (not None) for any other mask."""
    if mask is None:
        return None
    if mask.dtype == torch.bool and mask.ndim == 4 and tuple(mask.shape) == (batch, 1, 1, tk):
        return mask[:, 0, 0]
    return False


class TorchBackend:
    name = "torch"

    def __init__(
        self,
        device: str = "cpu",
        dtype: str | None = None,
        kernels: str | None = None,
        quantize: int | None = None,
        group_size: int = 64,
    ):
        """kernels: "auto" | "torch" | "triton" | None (= POLYASR_KERNELS, else "auto"); see kernel_dispatch.
        quantize: None, or 8 / 4: linear weights stored in that many bits (`torch_quant`), 4-bit ones in
        groups of `group_size` (32, 64, 128) input weights."""
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError("device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu")
        self.device = torch.device(device)
        # fp16 on CPU is slow and inexact in torch: default to fp32 there, fp16 on GPUs (bf16 with
        # 4-bit weights: the int4 GEMM takes nothing else).
        cuda_dtype = "bfloat16" if quantize == 4 else "float16"
        dtype = dtype or (cuda_dtype if self.device.type == "cuda" else "float32")
        if dtype not in _DTYPES:
            raise BackendError(f"unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
        self.dtype_name = dtype
        self.dtype = _DTYPES[dtype]
        self.kernels = resolve_kernels(kernels, self.device.type)  # "torch" | "triton"
        self.quantizer = None
        if quantize is not None:
            self.quantizer = torch_quant.Quantizer(quantize, group_size, self.device, self.dtype)
        self.quantization = torch_quant.label(quantize, group_size)  # "8bit-channel", "4bit-g64" or None
        # linear layers `prepare_linear` quantised / kept in full precision (Cin not a multiple of group_size)
        self.quantized_layers = self.full_precision_layers = 0

    def __repr__(self):
        quant = f", quantize={self.quantization}" if self.quantization else ""
        return f"TorchBackend(device={self.device}, dtype={self.dtype_name}, kernels={self.kernels}{quant})"

    # ---- arrays -------------------------------------------------------------------------
    def asarray(self, x, dtype=None) -> torch.Tensor:
        """Host data (numpy / tensor) -> a tensor on this backend; float data takes the compute dtype."""
        t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else torch.as_tensor(x)
        if dtype is None and t.is_floating_point():
            dtype = self.dtype
        return t.to(device=self.device, dtype=dtype)

    def param(self, x: np.ndarray, dtype_name: str | None = None) -> torch.Tensor:
        """A weight from a checkpoint array; `dtype_name="bfloat16"` marks raw uint16 bf16 bits. A quantised
        checkpoint's weight (`quantized_checkpoint.QuantizedArray`) becomes a QuantizedWeight as stored."""
        if hasattr(x, "qweight") and self.quantizer is not None:
            return self.quantizer.from_stored(x)
        with warnings.catch_warnings():
            # Checkpoint arrays are read-only memory maps; parameters are never written, so
            # sharing the pages (no copy) is what we want, and torch's warning is noise.
            warnings.simplefilter("ignore", UserWarning)
            t = torch.from_numpy(np.ascontiguousarray(x))
        if dtype_name == "bfloat16":
            t = t.view(torch.bfloat16)
        return t.to(device=self.device, dtype=self.dtype if t.is_floating_point() else t.dtype)

    def to_numpy(self, x: torch.Tensor) -> np.ndarray:
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()

    def cast(self, x) -> torch.Tensor:
        """A float tensor in the compute dtype (frontends compute in fp32)."""
        return x.to(self.dtype)

    def zeros(self, shape, dtype=None) -> torch.Tensor:
        return torch.zeros(shape, device=self.device, dtype=dtype or self.dtype)

    def synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def no_grad(self):
        return torch.inference_mode()

    # ---- layers ---------------------------------------------------------------------------
    def prepare_linear(self, w):
        """A (Cout, Cin) checkpoint weight in the layout `linear` takes on this device.

        On CPU that is (Cin, Cout), contiguous: a decoder step is a chain of (1, Cin) GEMVs whose
        weights come from DRAM, and MKL streams the transposed layout 1.7x faster (2.4x for the
        vocabulary projection); the encoder's large GEMMs are indifferent. GPUs keep (Cout, Cin).
        With `quantize`, a `torch_quant.QuantizedWeight` instead, unless the layer is left in full
        precision (`Quantizer.selects`); a weight that arrives quantised (a quantised checkpoint) stays so.
        """
        if isinstance(w, torch_quant.QuantizedWeight) or (self.quantizer and self.quantizer.selects(w)):
            self.quantized_layers += 1
            return w if isinstance(w, torch_quant.QuantizedWeight) else self.quantizer.quantize(w)
        self.full_precision_layers += 1
        return w.t().contiguous() if self.device.type == "cpu" else w

    def linear(self, x, w, b=None):
        """x: (..., Cin), w: as `prepare_linear` returned it -> (..., Cout)."""
        if isinstance(w, torch_quant.QuantizedWeight):
            return w.linear(x, b)
        if self.device.type != "cpu":
            return F.linear(x, w, b)
        flat = x.reshape(-1, x.shape[-1])
        y = torch.addmm(b, flat, w) if b is not None else flat @ w
        return y.view(*x.shape[:-1], w.shape[1])

    @staticmethod
    def contiguous(x):
        return x.contiguous()

    @staticmethod
    def conv1d(x, w, b=None, stride: int = 1, padding: int = 0):
        """Channels-last conv: x (B, T, Cin), w (Cout, Cin, K) -> (B, T', Cout)."""
        return F.conv1d(x.transpose(1, 2), w, b, stride=stride, padding=padding).transpose(1, 2)

    @staticmethod
    def layer_norm(x, w, b, eps: float = 1e-5):
        return F.layer_norm(x, (x.shape[-1],), w, b, eps)

    @staticmethod
    def gelu(x):
        return F.gelu(x)

    @staticmethod
    def embedding(ids, table):
        """ids (B, T) int -> (B, T, C)."""
        return F.embedding(ids, table)

    def attention(self, q, k, v, *, mask=None, causal: bool = False):
        """Scaled dot-product attention. q (B, H, Tq, D), k/v (B, Hkv, Tk, D) -> (B, H, Tq, D); Hkv < H is
        grouped-query attention (query head h reads kv head h // (H / Hkv)).

        mask: additive float or boolean (True = keep), broadcastable to (B, H, Tq, Tk).
        causal: query i sees keys <= i + (Tk - Tq), i.e. queries are the last Tq positions.
        With Triton kernels on, no mask or a boolean key-padding mask (B, 1, 1, Tk) runs the
        flash kernel; other masks (additive, per query, broadcast over the batch) stay on SDPA.
        """
        key_mask = _key_mask(mask, q.shape[0], k.shape[2])
        if self.kernels == "triton" and key_mask is not False:
            from polyasr.kernels.attention import attention

            return attention(q, k, v, key_mask=key_mask, causal=causal)
        gqa = k.shape[1] != q.shape[1]
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
        """Transformer-XL relative-position attention (Dai et al. 2019, sec. 3.3), as FastConformer uses it.

        q, k, v: (B, H, T, D); pos: (H, 2T-1, D), the projected embeddings of distances T-1 .. -(T-1);
        bias_u, bias_v: (H, 1, D); mask: bool (B, 1, 1, T), True on valid keys, or None.
        scores[i, j] = ((q_i + u) . k_j + (q_i + v) . pos[T-1-i+j]) / sqrt(D) -> softmax -> @ v.
        Torch path: `kernels.rel_pos_attention.rel_pos_attention_ref` (the shift as a strided view);
        Triton path: the fused kernel (shift by index arithmetic), for None or (B, 1, 1, T) masks.
        """
        key_mask = _key_mask(mask, q.shape[0], k.shape[2])
        if self.kernels == "triton" and key_mask is not False:
            from polyasr.kernels.rel_pos_attention import rel_pos_attention

            return rel_pos_attention(q, k, v, pos, bias_u, bias_v, key_mask=key_mask)
        from polyasr.kernels.rel_pos_attention import rel_pos_attention_ref

        return rel_pos_attention_ref(q, k, v, pos, bias_u, bias_v, mask=mask)

    # ---- shapes ---------------------------------------------------------------------------
    @staticmethod
    def split_heads(x, n_heads: int):
        """(B, T, H*D) -> (B, H, T, D)."""
        b, t, c = x.shape
        return x.view(b, t, n_heads, c // n_heads).transpose(1, 2)

    @staticmethod
    def merge_heads(x):
        """(B, H, T, D) -> (B, T, H*D)."""
        b, h, t, d = x.shape
        return x.transpose(1, 2).reshape(b, t, h * d)

    @staticmethod
    def split(x, sizes, axis: int = -1):
        return torch.split(x, list(sizes), dim=axis)

    @staticmethod
    def transpose(x, axes):
        return x.permute(*axes)

    @staticmethod
    def repeat_batch(x, n: int):
        """(B, ...) -> (B*n, ...), each item repeated n times consecutively."""
        return x.repeat_interleave(n, dim=0)

    @staticmethod
    def cache_write(cache, value, pos: int):
        """Write value (B, H, n, D) into cache (B, H, Tmax, D) at positions pos..pos+n; returns the cache."""
        cache[:, :, pos : pos + value.shape[2]] = value
        return cache

    # ---- audio frontend ---------------------------------------------------------------------
    def mel_power(self, samples: np.ndarray, cfg):
        """Mel power frames of host samples (N,), no centring: (1, n_mels, 1 + (N - n_fft) // hop)."""
        from polyasr.kernels.mel import mel_power

        x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)).to(self.device)[None]
        return mel_power(x, cfg, center=False)

    def log_mel(self, batch: np.ndarray, lengths: np.ndarray, cfg, tables=None):
        """Log-mel features of a zero-padded batch of host signals, each item as if alone (`kernels.mel`'s
        contract): batch (B, N) float32, lengths (B,) valid samples -> (features (B, n_mels, T) fp32 on the
        device, zero past each item's frames; frame counts (B,) int64 numpy).

        tables: the checkpoint's own (window (n_fft,), filter bank (n_mels, F)), or None for the config's.
        With Triton kernels on (and the config's tables) the fused frontend `kernels.mel_kernel` runs.
        """
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        n = torch.from_numpy(np.asarray(lengths, dtype=np.int64)).to(self.device)
        if self.kernels == "triton" and tables is None and cfg.power in (1.0, 2.0):
            from polyasr.kernels.mel_kernel import log_mel

            feats, frames = log_mel(x, cfg, n)
        else:
            from polyasr.kernels.mel import log_mel_ref

            feats, frames = log_mel_ref(x, cfg, n, tables)
        return feats, frames.cpu().numpy()

    @staticmethod
    def whisper_log(mel, log_max: float):
        from polyasr.kernels.mel import whisper_log

        return whisper_log(mel, log_max)

    @staticmethod
    def pad_last(x, n: int, value: float = 0.0):
        """Append n entries of `value` along the last axis."""
        return F.pad(x, (0, n), value=value)

    # ---- Conformer ops (GigaAM; Parakeet and Qwen3-ASR's audio encoder share them) --------------
    @staticmethod
    def conv2d(x, w, b=None, stride: int = 1, padding: int = 0, groups: int = 1):
        """Image-layout conv: x (B, Cin, H, W), w (Cout, Cin / groups, kh, kw) -> (B, Cout, H', W').

        Not channels-last: its users are conv stems over (time, frequency) that flatten
        (Cout, W') per frame right after (see `merge_heads`). groups = Cin: depthwise.
        """
        return F.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)

    @staticmethod
    def depthwise_conv1d(x, w, b=None, padding: int = 0):
        """Per-channel conv along time: x (B, T, C), w (C, K) -> (B, T + 2 * padding - K + 1, C)."""
        y = F.conv1d(x.transpose(1, 2), w[:, None, :], b, padding=padding, groups=w.shape[0])
        return y.transpose(1, 2)

    def glu_dwconv_silu(self, x, w, b=None, keep=None, ln=None, eps: float = 1e-5):
        """A Conformer conv module's middle: x (B, T, 2C) -> GLU -> frames outside `keep` (B, T) bool
        zeroed -> depthwise conv w (C, K), K odd, 'same' padding, bias b (C,) -> LayerNorm (ln =
        (gamma, beta), or None) -> SiLU -> (B, T, C). The torch path is exactly `glu`, `zero_masked`,
        `depthwise_conv1d`, `layer_norm`, `silu`; the Triton path is one fused kernel."""
        if self.kernels == "triton":
            from polyasr.kernels.dwconv import dwconv_glu_silu

            return dwconv_glu_silu(x, w, b, keep, ln, eps)
        x = self.glu(x)
        if keep is not None:
            x = self.zero_masked(x, keep[:, :, None])
        x = self.depthwise_conv1d(x, w, b, padding=(w.shape[1] - 1) // 2)
        if ln is not None:
            x = self.layer_norm(x, ln[0], ln[1], eps)
        return self.silu(x)

    @staticmethod
    def relu(x):
        return F.relu(x)

    @staticmethod
    def silu(x):
        return F.silu(x)

    @staticmethod
    def glu(x, axis: int = -1):
        """First half * sigmoid(second half) along `axis`: (..., 2C) -> (..., C)."""
        return F.glu(x, dim=axis)

    @staticmethod
    def log_softmax(x, axis: int = -1):
        return F.log_softmax(x, dim=axis)

    @staticmethod
    def argmax(x, axis: int = -1):
        """Indices of the maxima (int64), on the device."""
        return x.argmax(dim=axis)

    @staticmethod
    def max(x, axis: int = -1):
        return x.amax(dim=axis)

    def rope_tables(self, length: int, dim: int, base: float):
        """Rotary tables for positions 0..length-1: cos, sin (length, dim), rotate-half layout
        (frequency j and j + dim/2 equal), computed in fp32, returned in the compute dtype."""
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32, device=self.device) / dim))
        freqs = torch.outer(torch.arange(length, dtype=torch.float32, device=self.device), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(self.dtype), emb.sin().to(self.dtype)

    def rope(self, x, cos, sin):
        """x * cos + rotate_half(x) * sin per head of cos.shape[-1] = D channels.

        x: (B, T, H*D) channels-last (heads not split yet) or (B, H, T, D); cos, sin: (T, D), or
        (B, 1, T, D) per row. rotate_half(u) = concat(-u[D/2:], u[:D/2]). Torch path:
        `kernels.rope.rope_ref`; with Triton kernels on, one fused kernel.
        """
        return self.qk_norm_rope(x, None, cos, sin)

    def qk_norm_rope(self, x, w, cos, sin, eps: float = 1e-6):
        """`rope(rms_norm(x, w, eps), cos, sin)` per head of D channels (Qwen3's q / k path); w None:
        `rope` alone. With Triton kernels on, one kernel (`kernels.rope`) reads x once and writes once."""
        if self.kernels == "triton":
            from polyasr.kernels.rope import rope

            return rope(x, cos, sin, w, eps)
        from polyasr.kernels.rope import rope_ref

        return rope_ref(x, cos, sin, w, eps)

    def length_mask(self, lengths, size: int):
        """(B,) valid lengths (host ints) -> (B, size) bool on the device, True on valid frames."""
        n = torch.as_tensor(np.asarray(lengths), dtype=torch.int64, device=self.device)
        return torch.arange(size, device=self.device)[None, :] < n[:, None]

    @staticmethod
    def zero_masked(x, keep):
        """x where `keep` (bool, broadcastable to x) else 0; NaN/Inf outside `keep` do not survive."""
        return x.masked_fill(~keep, 0.0)

    # ---- LLM decoder ops (Qwen3-ASR's Qwen3 decoder) ---------------------------------------------
    @staticmethod
    def rms_norm(x, w, eps: float = 1e-6):
        """x / sqrt(mean(x^2) + eps) * w over the last axis, the statistic in fp32 (as Qwen3/Llama do)."""
        if x.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), w, eps)
        y = x.float()
        y = y * torch.rsqrt(y.square().mean(-1, keepdim=True) + eps)
        return w * y.to(x.dtype)

    @staticmethod
    def silu_mul(gate_up):
        """SwiGLU's gate: (..., 2F) = [gate | up] -> silu(gate) * up, (..., F)."""
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate).mul_(up)

    @staticmethod
    def masked_scatter(x, where, rows):
        """x (B, T, C) with the positions where `where` (B, T) is True replaced, in row-major order,
        by the rows of `rows` (N, C), N = where.sum(); returns a new array."""
        return x.masked_scatter(where[..., None], rows.to(x.dtype))

    @staticmethod
    def concat(xs, axis: int = 0):
        return torch.cat(list(xs), dim=axis)

    @staticmethod
    def stack(xs, axis: int = 0):
        return torch.stack(list(xs), dim=axis)

    # ---- decoding-loop ops (the batched TDT loop in models/parakeet/decode.py) ---------------------
    @staticmethod
    def where(cond, a, b):
        """a where cond else b, elementwise; a / b arrays or Python scalars."""
        return torch.where(cond, a, b)

    @staticmethod
    def sigmoid(x):
        return torch.sigmoid(x)

    @staticmethod
    def tanh(x):
        return torch.tanh(x)

    @staticmethod
    def any(x) -> bool:
        """Whether any element is true, on the host (a device sync)."""
        return bool(x.any())

    def evaluate(self, *xs):
        """Finish computing `xs` now (stage timings, decoding-loop sync points): waits for the GPU on
        CUDA; eager CPU work is already done. MLX's lazy graphs are computed here."""
        self.synchronize()
