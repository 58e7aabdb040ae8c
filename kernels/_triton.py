"""`triton` and `triton.language`, or stand-ins when Triton is not installed.

A kernel file holds its plain-torch reference beside the kernel, and the torch backend's CPU
path calls those references; CPU-only installs have no Triton (it is in the `cuda` extra).
The stand-ins let such a file import: ``@triton.jit`` / ``@triton.heuristics`` keep the
function, ``tl.constexpr(x)`` is ``x``, and launching a kernel raises. The backend never
launches one without Triton (`backends/kernel_dispatch.py` refuses kernels="triton" then).
"""

from __future__ import annotations

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

__all__ = ["HAS_TRITON", "tl", "triton"]
