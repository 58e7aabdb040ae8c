"""Weight-only quantisation of linear layers on MLX: `mx.quantize`'s affine mode.

A (Cout, Cin) weight becomes `bits`-bit integers packed into uint32 words, with one scale and one
bias (in the weight's dtype) per `group_size` consecutive input weights of each output row;
`quantized_linear` multiplies by it without unpacking it in Python (`mx.quantized_matmul`).
Activations stay in the backend's dtype: only the weights' storage (and read bandwidth) shrinks.

Bits: mlx 0.32's affine mode takes 1, 2, 3, 4, 5, 6 and 8 bits and group sizes 32, 64 and 128;
polyasr offers 4 and 8 (`polyasr.backends.QUANTIZE_BITS`, what the CLI and README document): the
widths whose WER cost `bench/bench_mlx_quant.py` measures. Anything else is an InvalidOptionError.
"""

from __future__ import annotations

from typing import NamedTuple

import mlx.core as mx
import numpy as np

from polyasr.backends import check_quantization


def label(bits: int | None, group_size: int) -> str | None:
    """'8bit-g64' (what results report as info["quantize"]), or None without quantisation."""
    return None if bits is None else f"{bits}bit-g{group_size}"


class QuantizedWeight(NamedTuple):
    """A (out_features, in_features) linear weight as `mx.quantize` packs it."""

    weight: mx.array  # (out_features, in_features * bits / 32) uint32
    scales: mx.array  # (out_features, in_features / group_size)
    biases: mx.array  # (out_features, in_features / group_size)
    bits: int
    group_size: int
    in_features: int
    out_features: int

    @property
    def nbytes(self) -> int:
        return self.weight.nbytes + self.scales.nbytes + self.biases.nbytes


def quantize_linear(w: mx.array, bits: int, group_size: int) -> QuantizedWeight | None:
    """A (Cout, Cin) checkpoint weight -> QuantizedWeight, or None when this layer must stay in full
    precision: mx.quantize groups consecutive elements of a row, so Cin must be a multiple of
    group_size (and the weight a 2-D float matrix); a partial last group is refused by mx rather
    than padded, and padding would need the activations padded too on every call."""
    check_quantization(bits, group_size)
    if w.ndim != 2 or not mx.issubdtype(w.dtype, mx.floating) or w.shape[1] % group_size:
        return None
    q, scales, biases = mx.quantize(w, group_size=group_size, bits=bits)
    mx.eval(q, scales, biases)  # once, at load: the fp weight need not stay alive in the graph
    return QuantizedWeight(q, scales, biases, bits, group_size, w.shape[1], w.shape[0])


def quantized_linear(x: mx.array, qw: QuantizedWeight, b: mx.array | None = None) -> mx.array:
    """x (..., Cin) @ W^T (+ b) -> (..., Cout), with W as `quantize_linear` packed it."""
    y = mx.quantized_matmul(x, qw.weight, qw.scales, qw.biases, transpose=True, group_size=qw.group_size, bits=qw.bits)
    return y + b if b is not None else y


def from_stored(qa) -> QuantizedWeight:
    """A quantised checkpoint's weight (`quantized_checkpoint.QuantizedArray`: unsigned values with one
    scale and bias per group, MLX's own affine convention) -> QuantizedWeight: the values repacked into
    mx's uint32 words (element k of a word in bits [k * bits, (k + 1) * bits)), nothing requantised."""
    check_quantization(qa.bits, qa.group_size)
    per_word = 32 // qa.bits
    v = qa.values().astype(np.uint32).reshape(qa.shape[0], -1, per_word)
    words = np.zeros(v.shape[:2], np.uint32)
    for k in range(per_word):
        words |= v[:, :, k] << np.uint32(k * qa.bits)
    return QuantizedWeight(
        mx.array(words), mx.array(qa.scales), mx.array(qa.biases), qa.bits, qa.group_size, qa.shape[1], qa.shape[0]
    )
