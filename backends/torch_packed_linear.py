"""CPU fp32 linear weights held in oneDNN's packed (blocked) layout, made once at load time or on
first use, for the row counts where oneDNN's GEMM beats MKL's.

MKL's `addmm` packs its weight operand again at every call. For an encoder layer (a few hundred
frames times a weight of a few megabytes) that packing is a visible share of the product, so a
weight that only ever multiplies whole sequences (`PackedLinear`) is held packed and nothing else.
A decoder weight multiplies one row per greedy step, a GEMV, which MKL streams from the (Cin, Cout)
layout at memory speed and oneDNN does not: decoder weights stay (Cin, Cout), except the very wide
vocabulary projection (`WideLinear`), which also gets a packed copy for the steps with several rows
(beams, a batch of windows), where re-packing tens of megabytes costs more than the product.
"""

from __future__ import annotations

import torch

# Output features from which a decoder weight is held as a `WideLinear` on CPU: vocabularies are
# tens of thousands wide, the widest hidden projection (an MLP) a few thousand.
WIDE_OUTPUT = 16384


def packing_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def _pack(w: torch.Tensor, rows_hint: int | None) -> torch.Tensor:
    """(Cout, Cin) -> oneDNN's packed copy; `rows_hint` is the row count its blocking is chosen for."""
    return torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), rows_hint)


def _packed_linear(flat: torch.Tensor, packed: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(flat.contiguous(), packed, b, "none", [], "")


class PackedLinear:
    """An encoder's weight: packed once from (Cout, Cin); `linear(x, b)` takes x (..., Cin). Its
    `shape` is (Cin, Cout), as the backend's other CPU weights."""

    def __init__(self, w: torch.Tensor):
        self.packed = _pack(w, None)  # no hint: the row count follows the audio's length
        self.shape = (w.shape[1], w.shape[0])

    @property
    def nbytes(self) -> int:  # the logical size: oneDNN's opaque tensor does not expose its blocked storage
        return self.packed.numel() * self.packed.element_size()

    def linear(self, x: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        y = _packed_linear(x.reshape(-1, x.shape[-1]), self.packed, b)
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
