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
from polyasr.errors import BackendError, InvalidOptionError

__all__ = ["DEVICES", "Backend", "check_quantization", "get_backend", "resolve_device"]

# The choices a caller (and the CLI, which imports them from here) may pass.
DEVICES = ("auto", "cpu", "cuda", "mlx")
DTYPES = ("float32", "float16", "bfloat16")
# weight widths for quantize= (mlx_quant, torch_quant; what they cost: bench/bench_mlx_quant.py, bench_torch_quant.py)
QUANTIZE_BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)  # weights per scale with quantize= (what mx.quantize takes; torch's 4 bits the same)


def check_quantization(bits, group_size) -> None:
    """Raise InvalidOptionError (one line, says what to pass) unless `bits` is one of QUANTIZE_BITS and
    `group_size` one of GROUP_SIZES: what every backend's quantisation takes."""
    if isinstance(bits, bool) or bits not in QUANTIZE_BITS:
        raise InvalidOptionError(
            f"quantize={bits!r} is not a supported weight width; use one of {' or '.join(map(str, QUANTIZE_BITS))} bits"
        )
    if isinstance(group_size, bool) or group_size not in GROUP_SIZES:
        raise InvalidOptionError(
            f"group_size={group_size!r} is not supported; use one of {', '.join(map(str, GROUP_SIZES))}"
        )


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
    checkpoint_scheme: str | None = None,
) -> Backend:
    """The backend object for a device (a `Backend`).

    kernels: "auto" | "torch" | "triton" | None (= $POLYASR_KERNELS, else "auto"): which
    implementation the hot ops run (`kernel_dispatch`).
    quantize: None, or the bits (QUANTIZE_BITS) linear weights are stored in, `group_size` (GROUP_SIZES)
    weights per scale (`mlx_quant` on MLX, `torch_quant` on CPU / CUDA).
    checkpoint_scheme: the `quantization` label of a quantised checkpoint about to be loaded
    (`models/quantized_checkpoint.py`); the layers the backend quantises itself (those the checkpoint
    stores in full precision) then follow that scheme, so they match what `convert` would have stored."""
    device = resolve_device(device)
    if device == "mlx":
        if importlib.util.find_spec("mlx") is None:
            raise BackendError("device 'mlx' needs the `mlx` package: pip install 'polyasr[mlx]' (Linux: mlx[cpu])")
        from polyasr.backends.mlx import MLXBackend

        return MLXBackend(dtype, quantize, group_size, checkpoint_scheme)
    try:
        import torch  # noqa: F401
    except ImportError:
        raise BackendError(f"device {device!r} runs on torch, which is not installed: pip install torch") from None
    from polyasr.backends.torch import TorchBackend

    return TorchBackend(device, dtype, kernels, quantize, group_size, checkpoint_scheme)
