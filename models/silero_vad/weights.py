"""Silero VAD weights: found in the installed `silero-vad` package, read without torch.

The package (6.2.3) ships the 16 kHz network twice, with different weights:
- `silero_vad.jit` ("jit", the default): the v6.2 model that silero's own `load_silero_vad()`
  runs (its ONNX files hold the same). A TorchScript archive; we never `torch.jit.load` it: its
  pickle is read by a restricted unpickler (tensors and inert module stand-ins only, nothing the
  file names is called) and only the 16 kHz network's tensors (`_model.*`) are taken; the 8 kHz
  network (`_model_8k.*`) and the streaming state are left.
- `silero_vad_16k.safetensors` ("safetensors"): added for silero's tinygrad port; the same
  architecture, but other weights: its probabilities differ from `load_silero_vad()`'s by up to
  0.9 on a window, and its speech regions differ (silero-vad issue 768 reports the same).
Both are found through the distribution's file list, never by importing `silero_vad` (that imports
torch), and read into numpy (memory maps), so the MLX path needs neither torch nor onnxruntime.
The package depends on torch; an MLX-only install takes the weights alone with
`pip install --no-deps silero-vad`.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np

from polyasr.errors import CheckpointError, InvalidOptionError
from polyasr.models.checkpoint_io import read_safetensors

# GigaAM's torch-zip reader (restricted unpickler, storages as memory-mapped numpy) reads the
# TorchScript archive too, with module classes added to what it accepts.
from polyasr.models.gigaam.checkpoint import _RestrictedUnpickler, _Tensor, _TorchZip
from polyasr.models.silero_vad.config import SileroVADConfig
from polyasr.models.weight_map import WeightMap, apply_weight_map, host_float32

PACKAGE = "silero-vad"
WEIGHT_FILES = {"jit": "silero_vad.jit", "safetensors": "silero_vad_16k.safetensors"}
_INSTALL = f"`pip install {PACKAGE}` (or, without torch, `pip install --no-deps {PACKAGE}`)"

# Our parameter names are the safetensors file's own; each table is the contract that every tensor is known.
SAFETENSORS_MAP = WeightMap(
    rename={
        "stft_conv.weight": "stft_conv.weight",  # (2F, 1, n_fft): DFT cos rows, then sin rows
        "conv{}.weight": "conv{}.weight",
        "conv{}.bias": "conv{}.bias",
        "lstm_cell.weight_ih": "lstm_cell.weight_ih",
        "lstm_cell.weight_hh": "lstm_cell.weight_hh",
        "lstm_cell.bias_ih": "lstm_cell.bias_ih",
        "lstm_cell.bias_hh": "lstm_cell.bias_hh",
        "final_conv.weight": "final_conv.weight",
        "final_conv.bias": "final_conv.bias",
    }
)

JIT_MAP = WeightMap(
    rename={
        "stft.forward_basis_buffer": "stft_conv.weight",
        **{f"encoder.{i}.reparam_conv.{p}": f"conv{i + 1}.{p}" for i in range(4) for p in ("weight", "bias")},
        "decoder.rnn.weight_ih": "lstm_cell.weight_ih",
        "decoder.rnn.weight_hh": "lstm_cell.weight_hh",
        "decoder.rnn.bias_ih": "lstm_cell.bias_ih",
        "decoder.rnn.bias_hh": "lstm_cell.bias_hh",
        "decoder.decoder.2.weight": "final_conv.weight",  # decoder = Dropout, ReLU, Conv1d, Sigmoid
        "decoder.decoder.2.bias": "final_conv.bias",
    }
)


def param_shapes(cfg: SileroVADConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter the network reads, with its shape (the loader checks the file against it)."""
    shapes = {"stft_conv.weight": (2 * cfg.n_freqs, 1, cfg.filter_length)}
    c_in = cfg.n_freqs
    for i, c_out in enumerate(cfg.encoder_channels, start=1):
        shapes[f"conv{i}.weight"] = (c_out, c_in, cfg.kernel_size)
        shapes[f"conv{i}.bias"] = (c_out,)
        c_in = c_out
    h = cfg.hidden_size
    shapes |= {
        "lstm_cell.weight_ih": (4 * h, c_in),
        "lstm_cell.weight_hh": (4 * h, h),
        "lstm_cell.bias_ih": (4 * h,),
        "lstm_cell.bias_hh": (4 * h,),
        "final_conv.weight": (1, h, 1),
        "final_conv.bias": (1,),
    }
    return shapes


def find_weights(path: str | os.PathLike | None = None, fmt: str = "jit") -> Path:
    """The weights file: `path` when given (a file, or a directory holding the `fmt` file), else the one
    the installed silero-vad package ships in format `fmt` ("jit" | "safetensors"). Raises
    ModelNotFoundError saying what to install."""
    if fmt not in WEIGHT_FILES:
        raise InvalidOptionError(f"Silero VAD weights format must be one of {', '.join(WEIGHT_FILES)}, got {fmt!r}")
    from polyasr.locate import packaged_file  # the registry's module: imported when needed

    return packaged_file(path, PACKAGE, "data", WEIGHT_FILES[fmt], "the Silero VAD weights", _INSTALL)


def load_weights(file: Path) -> tuple[SileroVADConfig, dict[str, np.ndarray]]:
    """The config and fp32 host parameters of a Silero VAD weights file (a TorchScript archive or
    safetensors, told apart by content); a missing, unexpected or mis-shaped tensor is a
    WeightsMismatchError naming it."""
    if zipfile.is_zipfile(file):
        tensors, tags = read_jit_tensors(file)
        table = JIT_MAP
    else:
        tensors, tags = read_safetensors(file)
        table = SAFETENSORS_MAP
    if not tensors:
        raise CheckpointError(f"{file}: holds no tensors, not Silero VAD weights")
    shapes = {table.rename.get(k) or k: tuple(v.shape) for k, v in tensors.items()}
    cfg = SileroVADConfig.from_shapes(shapes)
    params, tags = apply_weight_map(tensors, tags, table, param_shapes(cfg), str(file))
    return cfg, {name: host_float32(a, tags.get(name)) for name, a in params.items()}


# ---------------------------------------------------------------- TorchScript archives, without torch


class _ScriptModule:
    """A pickled TorchScript module: keeps the attributes the pickle gives it, does nothing else."""

    def __init__(self, *args):
        self.attrs: dict = {}

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise CheckpointError(f"TorchScript module state is a {type(state).__name__}, not a dict")
        self.attrs = state


class _JitUnpickler(_RestrictedUnpickler):
    """The torch-zip unpickler, plus what a TorchScript archive's data.pkl names: its module classes
    (`__torch__.*`, as inert stand-ins) and `torch.jit._pickle.build_intlist` (a list)."""

    def find_class(self, module: str, name: str):
        if module == "__torch__" or module.startswith("__torch__."):
            return _ScriptModule
        if (module, name) == ("torch.jit._pickle", "build_intlist"):
            return list
        return super().find_class(module, name)


def read_jit_tensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The 16 kHz network's tensors of silero's TorchScript archive, by state-dict name (`stft.*`,
    `encoder.*`, `decoder.*`), as numpy views; nothing in the archive is executed."""
    archive = _TorchZip(Path(path))
    try:
        root = _JitUnpickler(archive).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{path}: corrupt or unsupported TorchScript archive ({type(e).__name__}: {e})") from e
    finally:
        archive.zf.close()
    net = root.attrs.get("_model") if isinstance(root, _ScriptModule) else None
    if not isinstance(net, _ScriptModule):
        raise CheckpointError(f"{path}: not silero's VAD archive (no 16 kHz `_model` module in it)")
    arrays, tags = {}, {}
    _collect(net, "", arrays, tags)
    return arrays, tags


def _collect(module: _ScriptModule, prefix: str, arrays: dict, tags: dict) -> None:
    for name, value in module.attrs.items():
        if isinstance(value, _ScriptModule):
            _collect(value, f"{prefix}{name}.", arrays, tags)
        elif isinstance(value, _Tensor):
            arrays[prefix + name], tags[prefix + name] = value.array, value.tag
