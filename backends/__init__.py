"""Backends: the small op set every model is written against.

`Backend` (`protocol.py`) is the contract, each op documented once; `TorchBackend` (`torch.py`)
and `MLXBackend` (`mlx.py`) implement it, sharing the ops composed of other ops (`composed.py`).
`get_backend(device)` imports a backend only when it is chosen, so `import polyasr`
never pulls in torch-CUDA, Triton or MLX.
"""

from __future__ import annotations

import importlib.util
import platform
import sys

from polyasr.backends.protocol import Backend
from polyasr.errors import BackendError

__all__ = ["DEVICES", "Backend", "get_backend", "resolve_device"]

# The choices a caller (and the CLI, which imports them from here) may pass.
DEVICES = ("auto", "cpu", "cuda", "mlx")
DTYPES = ("float32", "float16", "bfloat16")
QUANTIZE_BITS = (4, 8)  # weight widths for quantize= (mlx_quant; what they cost: bench/bench_mlx_quant.py)
GROUP_SIZES = (32, 64, 128)  # weights per scale with quantize= (what mx.quantize takes)


def resolve_device(device: str | None) -> str:
    """'auto' -> 'mlx' on Apple Silicon with MLX installed, 'cuda' when torch sees a GPU, else 'cpu'."""
    device = (device or "auto").lower()
    if device not in DEVICES and not device.startswith("cuda:"):
        raise BackendError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device != "auto":
        return device
    if sys.platform == "darwin" and platform.machine() == "arm64" and importlib.util.find_spec("mlx"):
        return "mlx"
    try:
        import torch
    except ImportError:  # an MLX-only install
        if importlib.util.find_spec("mlx"):
            return "mlx"
        raise BackendError("no backend is installed: pip install torch, or 'polyasr[mlx]'") from None
    return "cuda" if torch.cuda.is_available() else "cpu"


def get_backend(
    device: str | None = "auto",
    dtype: str | None = None,
    kernels: str | None = None,
    quantize: int | None = None,
    group_size: int = 64,
) -> Backend:
    """The backend object for a device (a `Backend`).

    kernels: "auto" | "torch" | "triton" | None (= $POLYASR_KERNELS, else "auto"): which
    implementation the hot ops run (`kernel_dispatch`).
    quantize: None, or the bits (QUANTIZE_BITS) linear weights are stored in, `group_size` (GROUP_SIZES)
    weights per scale; MLX only (`mlx_quant`)."""
    device = resolve_device(device)
    if quantize is not None and device != "mlx":
        raise BackendError(
            f"weight quantisation (quantize={quantize}) runs on --device mlx only; "
            f"device {device!r} runs full-precision weights: drop --quantize or use --device mlx"
        )
    if device == "mlx":
        if importlib.util.find_spec("mlx") is None:
            raise BackendError("device 'mlx' needs the `mlx` package: pip install 'polyasr[mlx]' (Linux: mlx[cpu])")
        from polyasr.backends.mlx import MLXBackend

        return MLXBackend(dtype, quantize, group_size)
    try:
        import torch  # noqa: F401
    except ImportError:
        raise BackendError(f"device {device!r} runs on torch, which is not installed: pip install torch") from None
    from polyasr.backends.torch import TorchBackend

    return TorchBackend(device, dtype, kernels)
