"""CPU fp32 linear weights held packed (blocked) for the GEMM library that multiplies them, made
once at load time or on first use.

MKL's `addmm` packs its weight operand again at every call. For an encoder layer (a few hundred
frames times a weight of a few megabytes) that packing is a visible share of the product, so a
weight that only ever multiplies whole sequences (`PackedLinear`) is held packed and nothing else:
- by MKL (`cblas_sgemm_pack`) on Intel CPUs, for sequences whose length follows the audio: at the
  few hundred rows of a batch-1 encoder call its packed product is several percent faster than
  oneDNN's, and at thousands of rows they tie at the encoders' widths (768 and more);
- by oneDNN where a family fixes every call at `ONEDNN_FROM_ROWS` rows or more (Whisper's
  1500-frame windows): at that size oneDNN's is faster at Whisper base's width (by ~10% at 512),
  and the two tie at large-v3's. Also on other CPUs, where MKL's packed kernels were not measured.
A decoder weight multiplies one row per greedy step, a GEMV, which MKL streams from the (Cin, Cout)
layout at memory speed and oneDNN does not: decoder weights stay (Cin, Cout), except the very wide
vocabulary projection (`WideLinear`), which also gets a packed copy for the steps with several rows
(beams, a batch of windows), where re-packing tens of megabytes costs more than the product.
"""

from __future__ import annotations

import functools
import platform

import torch

# Output features from which a decoder weight is held as a `WideLinear` on CPU: vocabularies are
# tens of thousands wide, the widest hidden projection (an MLP) a few thousand.
WIDE_OUTPUT = 16384

# Rows per call from which a fixed-size product is packed by oneDNN rather than MKL.
ONEDNN_FROM_ROWS = 1024

# The row count MKL is told when packing. It picks the packed blocking, not which row counts the
# packed weight can multiply: any can (CTranslate2 packs its weights for m = 1 and relies on the
# same; `tests/backends/test_ops.py` sweeps it). Hints of 1024 and more halved the rate of some
# shapes at every row count; 256 was among the fastest at every count from 64 to 3000 rows.
MKL_PACK_ROWS = 256


def packing_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


@functools.cache
def mkl_packing_available() -> bool:
    """MKL's packed GEMM through torch's ops, on an Intel CPU (the only vendor it was measured on)."""
    if not (torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_reorder_linear_weight")):
        return False
    return _cpu_vendor() == "GenuineIntel"


def _cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "GenuineIntel" if "GenuineIntel" in platform.processor() else ""  # Windows names the vendor there


def _pack(w: torch.Tensor, rows_hint: int | None) -> torch.Tensor:
    """(Cout, Cin) -> oneDNN's packed copy; `rows_hint` is the row count its blocking is chosen for."""
    return torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), rows_hint)


def _packed_linear(flat: torch.Tensor, packed: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(flat.contiguous(), packed, b, "none", [], "")


class PackedLinear:
    """An encoder's weight: packed once from (Cout, Cin); `linear(x, b)` takes x (..., Cin). Its
    `shape` is (Cin, Cout), as the backend's other CPU weights. `rows`: the fewest rows a call
    multiplies, where the family fixes it (None: they follow the audio)."""

    def __init__(self, w: torch.Tensor, rows: int | None = None):
        self.shape = (w.shape[1], w.shape[0])
        self.library = "mkl" if mkl_packing_available() and (rows is None or rows < ONEDNN_FROM_ROWS) else "onednn"
        if self.library == "mkl":
            self.packed = torch.ops.mkl._mkl_reorder_linear_weight(w.contiguous(), MKL_PACK_ROWS)
            # `_mkl_linear` reads only the dtype and the (Cout, Cin) sizes of its unpacked-weight
            # argument when told the input's own row count; a stride-0 view carries them without
            # holding the weight twice
            self.dims = torch.zeros(1, dtype=w.dtype).expand(w.shape)
        else:
            self.packed = _pack(w, None)  # oneDNN's row hint made no difference to its rate

    @property
    def nbytes(self) -> int:  # the logical size: the packed tensors do not expose their storage
        return self.shape[0] * self.shape[1] * 4

    def linear(self, x: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if self.library == "mkl":
            y = torch.ops.mkl._mkl_linear(flat, self.packed, self.dims, b, flat.shape[0])
        else:
            y = _packed_linear(flat, self.packed, b)
        return y.view(*x.shape[:-1], self.shape[1])


class WideLinear:
    """A vocabulary projection, weight_t (Cin, Cout) fp32 contiguous: one row multiplies it by MKL,
    several rows by oneDNN's packed copy, made on the first multi-row call, so a model only ever
    decoded one row at a time does not hold it. `linear(x, b)` takes x (..., Cin)."""

    def __init__(self, weight_t: torch.Tensor):
        self.weight_t = weight_t
        self.packed = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.weight_t.shape)

    @property
    def nbytes(self) -> int:
        held = (self.weight_t,) if self.packed is None else (self.weight_t, self.packed)
        return sum(t.numel() * t.element_size() for t in held)

    def linear(self, x: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[0] == 1:
            y = torch.addmm(b, flat, self.weight_t) if b is not None else flat @ self.weight_t
        else:
            if self.packed is None:
                # a few rows is what beams and batches give
                self.packed = _pack(self.weight_t.t(), 16)
            y = _packed_linear(flat, self.packed, b)
        return y.view(*x.shape[:-1], self.weight_t.shape[1])
