"""One quantised linear weight in the layout both backends load (`models/quantized_checkpoint.py`
writes it to files): unsigned values q with one scale and one bias per group of input weights,

    w[o, i] = q[o, i] * scales[o, i // g] + biases[o, i // g]

q at 8 bits one a byte (0..255), at 4 bits two a byte (column 2j in the low nibble of byte j). That
is MLX's affine convention, so MLX multiplies by it as it is (repacked into its uint32 words); the
torch backend reads its own schemes back from it (`torch_quant.Quantizer.from_stored`). numpy only:
neither torch nor MLX is imported here.
"""

from __future__ import annotations

import numpy as np

from polyasr.errors import CheckpointError


class QuantizedArray:
    """A quantised linear weight as read from a checkpoint: its stored parts (numpy) and its logical
    (out, in) shape, so weight tables check it like any tensor. `np.asarray` dequantises it (fp32),
    which is what any host-side use of the weight gets; backends take the parts (`TorchBackend.param`,
    `MLXBackend.param`)."""

    def __init__(self, name: str, qweight: np.ndarray, scales: np.ndarray, biases: np.ndarray, bits: int, group: int):
        cin = qweight.shape[1] * (8 // bits) if qweight.ndim == 2 else -1
        if qweight.dtype != np.uint8 or qweight.ndim != 2 or cin % group:
            raise CheckpointError(
                f"quantised tensor {name!r}: qweight {qweight.dtype} {qweight.shape} is not a packed "
                f"uint8 (out, in * {bits} / 8) matrix for {bits}-bit groups of {group}"
            )
        expect = (qweight.shape[0], cin // group)
        for part, arr in (("scales", scales), ("biases", biases)):
            if arr.shape != expect:
                raise CheckpointError(
                    f"quantised tensor {name!r}: {part} has shape {arr.shape}, but its qweight {qweight.shape} "
                    f"at {bits} bits in groups of {group} needs {expect}"
                )
        self.name, self.bits, self.group_size = name, bits, group
        self.qweight, self.scales, self.biases = qweight, scales.astype(np.float32), biases.astype(np.float32)
        self.shape = (qweight.shape[0], cin)
        self.ndim, self.dtype = 2, np.dtype(np.float32)

    def values(self) -> np.ndarray:
        """The unsigned integers, (out, in) uint8."""
        if self.bits == 8:
            return self.qweight
        out = np.empty(self.shape, np.uint8)
        out[:, 0::2], out[:, 1::2] = self.qweight & 0xF, self.qweight >> 4
        return out

    def __array__(self, dtype=None, copy=None):
        g = self.values().astype(np.float32).reshape(self.shape[0], -1, self.group_size)
        w = (g * self.scales[..., None] + self.biases[..., None]).reshape(self.shape)
        return w if dtype is None else w.astype(dtype)


def quantize_host(w: np.ndarray, bits: int, group: int, name: str = "") -> QuantizedArray:
    """polyasr's schemes on the host (numpy, the same fp32 arithmetic and round-half-to-even as
    `backends/torch_quant.py`), written in the layout above: 8 bits symmetric per output channel, 4 bits
    affine per group. MLX uses it for the layers it quantises itself when it runs a quantised
    checkpoint, so both backends multiply by the same weights."""
    w = np.asarray(w, dtype=np.float32)
    cout, cin = w.shape
    if bits == 8:
        amax = np.abs(w).max(axis=1)
        s = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
        q = np.clip(np.round(w / s[:, None]), -127, 127).astype(np.int16)
        scales = np.repeat(s[:, None], cin // group, axis=1)
        return QuantizedArray(name, (q + 128).astype(np.uint8), scales, np.float32(-128) * scales, 8, group)
    g = w.reshape(cout, cin // group, group)
    lo, hi = g.min(axis=-1), g.max(axis=-1)
    s = ((hi - lo) / np.float32(15)).astype(np.float32)
    safe = np.where(s > 0, s, np.float32(1))
    q = np.clip(np.round((g - lo[..., None]) / safe[..., None]), 0, 15).astype(np.uint8).reshape(cout, cin)
    return QuantizedArray(name, q[:, 0::2] | (q[:, 1::2] << 4), s, lo, 4, group)
