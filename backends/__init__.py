"""Backends: the small op set every model is written against.

`get_backend(device)` imports a backend only when it is chosen, so `import polyasr`
never pulls in torch-CUDA, Triton or MLX.
"""

from __future__ import annotations

import importlib.util
import platform
import sys

from polyasr.errors import BackendError

DEVICES = ("auto", "cpu", "cuda", "mlx")


def resolve_device(device: str | None) -> str:
    """'auto' -> 'mlx' on Apple Silicon with MLX installed, 'cuda' when torch sees a GPU, else 'cpu'."""
    device = (device or "auto").lower()
    if device not in DEVICES and not device.startswith("cuda:"):
        raise BackendError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device != "auto":
        return device
    if sys.platform == "darwin" and platform.machine() == "arm64" and importlib.util.find_spec("mlx"):
        return "mlx"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def get_backend(
    device: str | None = "auto",
    dtype: str | None = None,
    kernels: str | None = None,
    quantize: int | None = None,
    group_size: int = 64,
):
    """The backend object for a device: ops plus `device` and `dtype` attributes.

    kernels: "auto" | "torch" | "triton" | None (= $POLYASR_KERNELS, else "auto"): which
    implementation the hot ops run (`kernel_dispatch`).
    quantize: None, or the bits (4, 8) linear weights are stored in, `group_size` (32, 64, 128)
    weights per scale (`mlx_quant` on MLX, `torch_quant` on CPU / CUDA)."""
    device = resolve_device(device)
    if device == "mlx":
        if importlib.util.find_spec("mlx") is None:
            raise BackendError("device 'mlx' needs the `mlx` package: pip install 'polyasr[mlx]' (Linux: mlx[cpu])")
        from polyasr.backends.mlx import MLXBackend

        return MLXBackend(dtype, quantize, group_size)
    from polyasr.backends.torch import TorchBackend

    return TorchBackend(device, dtype, kernels, quantize, group_size)
