"""Which implementation the torch backend's hot ops run: plain torch or our Triton kernels.

One switch, read once when a backend is built:

    kernels="auto"   (default) plain torch, for now: the kernels have only run in the Triton
                     interpreter (no GPU was available to validate them); once they have passed
                     their tests on a GPU, "auto" becomes Triton on CUDA when `triton` imports
                     (AUTO_USES_TRITON);
    kernels="torch"  always plain torch (the reference path);
    kernels="triton" always the Triton kernels; on a CPU device this needs the Triton interpreter
                     (TRITON_INTERPRET=1 in the environment before polyasr's kernels are imported).

The engine option (`AsrEngine.from_model(..., kernels=...)`, CLI `--kernels`) wins; without it
the environment variable ``POLYASR_KERNELS`` decides, and "auto" when that is unset. Model code
never picks a kernel: it calls backend ops, and the backend routes them.
"""

from __future__ import annotations

import importlib.util
import os

from polyasr.errors import BackendError

KERNEL_CHOICES = ("auto", "torch", "triton")
# Off until the kernels have been compiled and tested on a GPU: a default must not be unvalidated code.
AUTO_USES_TRITON = False
ENV_VAR = "POLYASR_KERNELS"


def _requested(choice: str | None) -> str:
    source = "kernels"
    if choice is None:
        choice, source = os.environ.get(ENV_VAR) or "auto", ENV_VAR
    choice = choice.strip().lower()
    if choice not in KERNEL_CHOICES:
        raise BackendError(f"{source}={choice!r} is not one of {', '.join(KERNEL_CHOICES)}")
    return choice


def resolve_kernels(choice: str | None, device_type: str) -> str:
    """'torch' or 'triton' for a backend on ``device_type`` ('cpu', 'cuda').

    ``choice`` None reads ``POLYASR_KERNELS``. Raises BackendError when 'triton' is forced
    but cannot run: Triton missing, or a CPU device without the Triton interpreter.
    """
    choice = _requested(choice)
    if choice == "torch":
        return "torch"
    has_triton = importlib.util.find_spec("triton") is not None
    if choice == "auto":
        return "triton" if AUTO_USES_TRITON and device_type == "cuda" and has_triton else "torch"
    if not has_triton:
        raise BackendError(
            "kernels='triton' was asked for but the `triton` package is not installed; "
            "install it (it ships with CUDA builds of torch) or use kernels='torch'"
        )
    from polyasr.kernels._triton import interpreting  # triton is installed: importing it is fine now

    if device_type != "cuda" and not interpreting():
        raise BackendError(
            f"kernels='triton' on device {device_type!r} runs only in the Triton interpreter: set "
            "TRITON_INTERPRET=1 in the environment before starting (slow; for tests), use a CUDA "
            "device, or use kernels='torch'"
        )
    return "triton"
