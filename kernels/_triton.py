"""`triton` and `triton.language`, or stand-ins when Triton is not installed.

A kernel file holds its plain-torch reference beside the kernel, and the torch backend's CPU
path calls those references; CPU-only installs have no Triton (it is in the `cuda` extra).
The stand-ins let such a file import: ``@triton.jit`` / ``@triton.heuristics`` keep the
function, ``tl.constexpr(x)`` is ``x``, and launching a kernel raises. The backend never
launches one without Triton (`backends/kernel_dispatch.py` refuses kernels="triton" then).
"""

from __future__ import annotations

import os

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - CI installs Triton
    HAS_TRITON = False

    class _Unlaunchable:
        def __init__(self, fn):
            self.fn = fn

        def __getitem__(self, grid):
            raise RuntimeError(f"{self.fn.__name__}: Triton is not installed (pip install triton)")

    class _TritonStandIn:
        @staticmethod
        def jit(fn=None, **_):
            return _Unlaunchable(fn) if fn is not None else _Unlaunchable

        @staticmethod
        def heuristics(_values):
            return lambda fn: fn

        def __getattr__(self, name):  # a launcher's helpers (cdiv, next_power_of_2, ...)
            raise RuntimeError(f"triton.{name}: Triton is not installed (pip install triton)")

    class _LanguageStandIn:
        @staticmethod
        def constexpr(value=None):
            return value

    triton, tl = _TritonStandIn(), _LanguageStandIn()


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (TRITON_INTERPRET set, read at launch)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_launchable(op: str, x) -> None:
    """ValueError unless a kernel can run on `x`: CUDA tensors, or any tensor under the interpreter,
    which has no bfloat16."""
    if x.device.type != "cuda" and not interpreting():
        raise ValueError(f"{op}: the Triton kernel needs CUDA tensors (or TRITON_INTERPRET=1), got {x.device}")
    if interpreting() and str(x.dtype) == "torch.bfloat16":
        raise ValueError(f"{op}: the Triton interpreter has no bfloat16; use float32 or float16")


__all__ = ["HAS_TRITON", "check_launchable", "interpreting", "tl", "triton"]
