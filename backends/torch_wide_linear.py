"""A CPU fp32 linear weight with a very wide output (a vocabulary projection), multiplied by the
library that is fastest for the number of rows.

One row (a greedy decoder step) is a GEMV: MKL streams the (Cin, Cout) layout at memory speed.
Several rows (beams, a batch of windows) are a GEMM, and there MKL packs the whole weight again on
every call, which for tens of megabytes costs more than the product itself; oneDNN multiplies by a
copy packed once into its blocked layout. That copy is made on the first multi-row call, so a
model only ever decoded one row at a time does not hold it.
"""

from __future__ import annotations

import torch

# Output features from which a weight is held as a `WideLinear` on CPU: vocabularies are tens of
# thousands wide, the widest hidden projection (an MLP) a few thousand.
WIDE_OUTPUT = 16384


def packing_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


class WideLinear:
    """weight_t: (Cin, Cout) fp32, contiguous. `linear(x, b)` takes x (..., Cin)."""

    def __init__(self, weight_t: torch.Tensor):
        self.weight_t = weight_t
        self.packed = None  # oneDNN's copy, (Cout, Cin) in its blocked layout

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.weight_t.shape)

    def linear(self, x: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[0] == 1:
            y = torch.addmm(b, flat, self.weight_t) if b is not None else flat @ self.weight_t
        else:
            if self.packed is None:
                # the row count is a hint for the blocking; a few rows is what beams and batches give
                self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight_t.t().contiguous(), 16)
            y = torch.ops.mkldnn._linear_pointwise(flat.contiguous(), self.packed, b, "none", [], "")
        return y.view(*x.shape[:-1], self.weight_t.shape[1])
