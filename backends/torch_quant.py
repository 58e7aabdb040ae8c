"""Weight quantisation of linear layers on the torch backend (CPU and CUDA).

Two schemes, one per width, chosen for what the fast kernels take:

* 8 bits: symmetric, one scale per output channel. q = round(w / s) in [-127, 127], s = max|w_row| / 127,
  so |w - q s| <= s / 2. That is what an int8 GEMM needs (the scale factors out of the reduction) and
  what CTranslate2 (faster-whisper's `compute_type="int8"`) and torchao's int8 configs store.
* 4 bits: affine, grouped along the input axis like `mx.quantize`: per `group_size` consecutive input
  weights of a row, s = (max - min) / 15, bias = min, q = round((w - min) / s) in [0, 15], so
  |w - (q s + bias)| <= s / 2. Packed two per byte (even input column in the low nibble).

How `linear` computes (`QuantizedWeight.linear`):

* CPU, 8 bits, the CPU has int8 dot-product instructions (x86 AVX512-VNNI / AVX-VNNI / AMX, Arm's
  dot-product extension): dynamic per-token int8 activations, x_q = round(x * 127 / max|x_row|), the
  product on `torch._int_mm` (int8 x int8 -> int32, oneDNN), rescaled by both scales.
* CPU, 4 bits, fast int8: the values held one a byte (int8 0..15; the checkpoint stays packed), per-token
  int8 activations, and for few rows (decoding steps) one `torch._int_mm` over a block-diagonal expansion
  of the activations by group, so each group's dot product gets its own scale and bias; for many rows
  (encoders) the weight is dequantised once per call and the dense fp GEMM runs.
* CPU without fast int8 (both widths): weight-only, the weight dequantised to the compute dtype inside
  the call and multiplied by the dense GEMM. torch's own weight-only kernels (`_weight_int8pack_mm`,
  `_weight_int4pack_mm_for_cpu`) and torchao 0.18's CPU int8 / int4 layouts were slower than these
  paths on the CPU measured (docs/architecture.md).
* CUDA: weight-only, torch's own fused dequantising GEMMs: `_weight_int8pack_mm` (8 bits) and
  tinygemm's `_weight_int4pack_mm` (4 bits, bfloat16 activations), the kernels torchao's int8 / int4
  weight-only tensors dispatch to.

Weights stay quantised in memory; only the compute dtype's activations pass between layers.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass

import numpy as np
import torch

from polyasr.backends import check_quantization as check_options
from polyasr.backends.quant_layout import QuantizedArray
from polyasr.errors import CheckpointError, InvalidOptionError

_Q8_MAX = 127
_Q4_MAX = 15


def check_quantization(bits, group_size, device_type: str = "cpu", dtype: torch.dtype | None = None) -> None:
    """Raise InvalidOptionError (one line, says what to pass) unless the torch backend quantises so:
    the options every backend takes, and bfloat16 activations for 4 bits on CUDA."""
    check_options(bits, group_size)
    if device_type == "cuda" and bits == 4 and dtype is not None and dtype != torch.bfloat16:
        raise InvalidOptionError(
            f"quantize=4 on CUDA runs tinygemm's int4 GEMM, which takes bfloat16 activations, not "
            f"{str(dtype).removeprefix('torch.')}: pass --dtype bfloat16 (or leave --dtype unset)"
        )


def label(bits: int | None, group_size: int) -> str | None:
    """What results report as info["quantize"]: '8bit-channel' (one scale per output channel),
    '4bit-g64', or None without quantisation."""
    if bits is None:
        return None
    return "8bit-channel" if bits == 8 else f"{bits}bit-g{group_size}"


@functools.cache
def cpu_has_fast_int8() -> bool:
    """Whether this CPU multiplies int8 natively (VNNI / AMX on x86, the dot-product extension on Arm),
    read from /proc/cpuinfo (Linux) and torch's dispatch level, so the dynamic-activation path only
    runs where an int8 GEMM beats the fp32 one."""
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            flags = f.read()
    except OSError:
        pass
    if platform.machine().lower() in ("arm64", "aarch64"):
        return " asimddp" in flags or platform.system() == "Darwin"  # every Apple Silicon has it
    words = set(flags.split())
    return bool(words & {"avx512_vnni", "avx_vnni", "amx_int8"}) and torch.backends.cpu.get_cpu_capability() != "NO AVX"


# ---- the schemes (host or device tensors; fp32 math) ------------------------------------------------
def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Cout, Cin) float -> q (Cout, Cin) int8 in [-127, 127], scales (Cout,) fp32; w ~ q * s[:, None]."""
    w = w.float()
    amax = w.abs().amax(dim=1)
    s = torch.where(amax > 0, amax / _Q8_MAX, torch.ones_like(amax))  # an all-zero row: any scale is exact
    q = torch.round(w / s[:, None]).clamp_(-_Q8_MAX, _Q8_MAX).to(torch.int8)
    return q, s


def quantize_int4(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Cout, Cin) float, Cin % group_size == 0 -> q (Cout, Cin) uint8 in [0, 15] (unpacked), scales and
    biases (Cout, Cin / group_size) fp32; w ~ q * s + bias per group."""
    cout, cin = w.shape
    g = w.float().reshape(cout, cin // group_size, group_size)
    lo, hi = g.amin(dim=-1), g.amax(dim=-1)
    s = (hi - lo) / _Q4_MAX
    safe = torch.where(s > 0, s, torch.ones_like(s))  # a constant group: q = 0, the bias is exact
    q = torch.round((g - lo[..., None]) / safe[..., None]).clamp_(0, _Q4_MAX).to(torch.uint8)
    return q.reshape(cout, cin), s, lo


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """(Cout, Cin) uint8 in [0, 15] -> (Cout, Cin / 2) uint8, column 2j in the low nibble of byte j."""
    return q[:, 0::2] | (q[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_int4`: (Cout, Cin / 2) uint8 -> (Cout, Cin) uint8."""
    return torch.stack((packed & 0xF, packed >> 4), dim=-1).reshape(packed.shape[0], -1)


@dataclass
class QuantizedWeight:
    """A (out_features, in_features) linear weight in one of the two schemes (module docstring).

    qweight: int8 (Cout, Cin) for 8 bits; uint8 (Cout, Cin / 2), two 4-bit values a byte, for 4 bits.
    scales: fp32 (Cout,) for 8 bits; (Cout, Cin / group_size) for 4 bits. biases: None | like scales.
    compute: "int8_dynamic" | "int4_dynamic" | "dequantize" | "cuda_int8" | "cuda_int4" (how `linear` runs).
    packed, packed_scales: a kernel's own copy of the weight and its scales (tinygemm's layout on CUDA;
    on a CPU with fast int8, 4-bit values one per int8 byte with qweight None), or None.
    """

    qweight: torch.Tensor | None
    scales: torch.Tensor
    biases: torch.Tensor | None
    bits: int
    group_size: int
    in_features: int
    out_features: int
    compute: str
    packed: torch.Tensor | None = None
    packed_scales: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        parts = (self.qweight, self.scales, self.biases, self.packed, self.packed_scales)
        return sum(t.numel() * t.element_size() for t in parts if t is not None)

    @property
    def shape(self) -> tuple[int, int]:
        return self.out_features, self.in_features

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The (Cout, Cin) weight the quantised one stands for."""
        if self.bits == 8:
            return (self.qweight.to(torch.float32) * self.scales[:, None]).to(dtype)
        if self.qweight is None:  # the values are held one a byte (`int4_dynamic`)
            g = self.packed.view(self.out_features, -1, self.group_size).to(dtype)
            g.mul_(self.scales[..., None].to(dtype)).add_(self.biases[..., None].to(dtype))
            return g.view(self.out_features, self.in_features)
        # nibbles straight into one float buffer, scaled and shifted in place: the 4-bit CPU path runs
        # this on every call, so it makes no intermediate copies of the whole weight
        w = torch.empty(self.out_features, self.in_features, dtype=dtype, device=self.qweight.device)
        w[:, 0::2] = self.qweight & 0xF
        w[:, 1::2] = self.qweight >> 4
        g = w.view(self.out_features, -1, self.group_size)
        g.mul_(self.scales[..., None].to(dtype)).add_(self.biases[..., None].to(dtype))
        return w

    def linear(self, x: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        """x (..., Cin) @ W^T (+ b) -> (..., Cout) in x's dtype."""
        flat = x.reshape(-1, self.in_features)
        if self.compute == "int8_dynamic":
            y = _int8_dynamic_mm(flat, self.qweight, self.scales)
        elif self.compute == "int4_dynamic" and flat.shape[0] * (self.in_features // self.group_size) <= _GROUPED_ROWS:
            y = _int4_dynamic_mm(flat, self.packed, self.scales, self.biases)
        elif self.compute == "cuda_int8":
            y = torch.ops.aten._weight_int8pack_mm(flat, self.qweight, self.scales.to(flat.dtype))
        elif self.compute == "cuda_int4":
            y = torch.ops.aten._weight_int4pack_mm(flat, self.packed, self.group_size, self.packed_scales)
        else:
            y = flat @ self.dequantize(flat.dtype).t()
        if b is not None:
            y = y + b
        return y.view(*x.shape[:-1], self.out_features)


def _int8_dynamic_mm(x: torch.Tensor, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """x (M, K) float, q (N, K) int8, s (N,) -> x_q q^T rescaled, (M, N) in x's dtype; x quantised
    per row (token) to int8 with its own scale, so one loud frame does not coarsen the others."""
    xf = x.float()
    amax = xf.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12)
    xq = torch.round(xf * (_Q8_MAX / amax)).to(torch.int8)
    acc = torch._int_mm(xq, q.t())
    return acc.to(torch.float32).mul_(amax * (1.0 / _Q8_MAX)).mul_(s).to(x.dtype)


# Below this many (rows x groups), 4-bit weights multiply as a grouped int8 GEMM; above it, dequantising the
# weight once per call costs less than the group-expanded GEMM (bench/bench_torch_quant.py).
_GROUPED_ROWS = 256


def _int4_dynamic_mm(x: torch.Tensor, q: torch.Tensor, s: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x (M, K) float, q (N, K) int8 values 0..15, s / b (N, K / G) -> x @ (q s + b)^T, (M, N) in x's dtype,
    x quantised per row to int8. Per group g: s_g (x_q,g . q_g) + b_g sum(x_q,g), the dot products as one
    int8 GEMM of a block-diagonal (M * K / G, K) expansion of x_q (each row one group of one token)."""
    m, k = x.shape
    n, ng = q.shape[0], s.shape[1]
    xf = x.float()
    amax = xf.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12)
    xq = torch.round(xf * (_Q8_MAX / amax)).to(torch.int8).view(m, ng, k // ng)
    blocks = torch.zeros(m, ng, ng, k // ng, dtype=torch.int8, device=x.device)
    diag = torch.arange(ng, device=x.device)
    blocks[:, diag, diag] = xq
    dots = torch._int_mm(blocks.view(m * ng, k), q.t()).view(m, ng, n).to(torch.float32)
    y = torch.einsum("mgn,ng->mn", dots, s) + xq.sum(dim=-1, dtype=torch.int32).to(torch.float32) @ b.t()
    return y.mul_(amax * (1.0 / _Q8_MAX)).to(x.dtype)


class Quantizer:
    """What `TorchBackend.prepare_linear` calls: the layer selection and the scheme for one device."""

    def __init__(self, bits: int, group_size: int, device: torch.device, dtype: torch.dtype):
        check_quantization(bits, group_size, device.type, dtype)
        self.bits, self.group_size, self.device, self.dtype = bits, group_size, device, dtype
        if device.type == "cuda":
            self.compute = "cuda_int8" if bits == 8 else "cuda_int4"
        else:
            fast = cpu_has_fast_int8()
            self.compute = ("int8_dynamic" if bits == 8 else "int4_dynamic") if fast else "dequantize"

    def selects(self, w) -> bool:
        """Whether a (Cout, Cin) weight is quantised: a 2-D float matrix whose Cin is a multiple of the
        group size, the rule MLX has (`mx.quantize` refuses a partial group), so one checkpoint layout
        serves both backends. Layers outside it stay in full precision."""
        return (
            isinstance(w, torch.Tensor) and w.ndim == 2 and w.is_floating_point() and w.shape[1] % self.group_size == 0
        )

    def quantize(self, w: torch.Tensor) -> QuantizedWeight:
        """A (Cout, Cin) weight `selects` took -> QuantizedWeight on the backend's device."""
        if self.bits == 8:
            q, s = quantize_int8(w)
            return self.wrap(q, s, None)
        q, s, lo = quantize_int4(w, self.group_size)
        return self.wrap(pack_int4(q), s, lo)

    def from_stored(self, qa: QuantizedArray) -> QuantizedWeight:
        """A `quant_layout.QuantizedArray` (the layout both backends load) -> QuantizedWeight."""
        if (qa.bits, qa.group_size) != (self.bits, self.group_size):
            raise CheckpointError(
                f"quantised tensor {qa.name!r} is {qa.bits}-bit in groups of {qa.group_size}, the backend "
                f"quantises to {self.bits} bits in groups of {self.group_size}"
            )
        q, s, b = (torch.from_numpy(np.array(a)) for a in (qa.qweight, qa.scales, qa.biases))
        if self.bits == 4:
            return self.wrap(q, s, b)
        # torch's 8 bits: one scale per output channel, symmetric (q + 128 stored, bias = -128 scale)
        if not (torch.equal(s, s[:, :1].expand_as(s)) and torch.allclose(b, -128 * s, rtol=1e-6, atol=0)):
            raise CheckpointError(
                f"quantised tensor {qa.name!r}: 8-bit scales must be one per output channel with "
                "biases = -128 x scales (the symmetric int8 scheme torch multiplies in); re-convert it"
            )
        return self.wrap((q.to(torch.int16) - 128).to(torch.int8), s[:, 0], None)

    def wrap(self, qweight, scales, biases) -> QuantizedWeight:
        """Stored parts (as `quantize` makes them, or read from a quantised checkpoint) -> a QuantizedWeight
        ready for this device's kernel."""
        cout = qweight.shape[0]
        cin = qweight.shape[1] * (2 if self.bits == 4 else 1)
        dev = self.device
        qw = QuantizedWeight(
            qweight.to(dev).contiguous(),
            scales.to(dev, torch.float32).contiguous(),
            None if biases is None else biases.to(dev, torch.float32).contiguous(),
            self.bits,
            self.group_size,
            cin,
            cout,
            self.compute,
        )
        if self.compute == "cuda_int4":
            _pack_tinygemm(qw, self.dtype)
        elif self.compute == "int4_dynamic":  # the int8 GEMM reads one value a byte: unpack once, drop the nibbles
            qw.packed, qw.qweight = unpack_int4(qw.qweight).to(torch.int8), None
        return qw


def _pack_tinygemm(qw: QuantizedWeight, dtype: torch.dtype) -> None:
    """tinygemm's layout: the weight as `_convert_weight_to_int4pack` tiles it (unpacked int32 values
    0..15 in torch < 2.5, two-a-byte uint8 with the even column in the high nibble since), and
    (K / G, N, 2) scale / zero pairs with w = (q - 8) s + zero, i.e. zero = bias + 8 s."""
    q = unpack_int4(qw.qweight)
    hi_lo = (q[:, 0::2] << 4) | q[:, 1::2]
    qw.packed = torch.ops.aten._convert_weight_to_int4pack(hi_lo.contiguous(), 8)
    zeros = qw.biases + 8 * qw.scales
    qw.packed_scales = torch.stack((qw.scales.t(), zeros.t()), dim=-1).to(dtype).contiguous()


def quantized_linear_reference(x: torch.Tensor, qw: QuantizedWeight, b: torch.Tensor | None = None) -> torch.Tensor:
    """The spec every compute path is tested against: x @ dequantize(W)^T (+ b), in fp32."""
    y = x.float() @ qw.dequantize(torch.float32).t()
    return y + b.float() if b is not None else y
