"""Finding and reading the GE2E voice encoder's `pretrained.pt`.

The `resemblyzer` PyPI package ships it as `resemblyzer/pretrained.pt`: a torch pickle in torch's
legacy (pre-zip) format of `{"step", "model_state", "optimizer_state"}`. It is found through the
installed distribution's file list (never by importing resemblyzer, which loads librosa and
webrtcvad) and read with `torch.load(weights_only=True)` where torch is installed, else (MLX) with
`read_legacy_torch`: GigaAM's restricted unpickler (tensors, storages and plain containers only;
anything else is refused before it runs) over the legacy layout, no torch needed. Only
`model_state` is kept.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import struct
import zipfile
from pathlib import Path

import numpy as np

from polyasr.errors import CheckpointError

# GigaAM's torch-zip unpickler resolves only tensors, storages and plain containers; the legacy
# layout differs from the zip one only in where the pickle and the storages' bytes are.
from polyasr.models.gigaam.checkpoint import _RestrictedUnpickler, _Tensor, read_torch_zip

PACKAGE = "resemblyzer"
WEIGHTS_FILE = "pretrained.pt"
INSTALL = "`pip install 'polyasr[diarize]'` (or `pip install resemblyzer`)"


def find_weights(path: str | os.PathLike | None = None) -> Path:
    """`path` (a file, or a directory holding `pretrained.pt`), else the installed resemblyzer
    package's file. Raises ModelNotFoundError saying what to install."""
    from polyasr.locate import packaged_file  # the registry's module: imported when needed

    what = "the GE2E voice encoder weights (the default speaker embedding)"
    return packaged_file(path, PACKAGE, PACKAGE, WEIGHTS_FILE, what, INSTALL)


def read_checkpoint(file: Path, use_torch: bool = True) -> dict[str, np.ndarray]:
    """The `model_state` tensors of a voice encoder checkpoint, as host float32 numpy arrays; with
    use_torch False (or no torch installed) through our restricted readers, torch never imported."""
    try:
        if not use_torch:
            raise ImportError
        import torch
    except ImportError:
        ckpt = read_torch_zip(file) if zipfile.is_zipfile(file) else read_legacy_torch(file)
        is_tensor = lambda t: isinstance(t, _Tensor)  # noqa: E731
        to_numpy = lambda t: np.asarray(t.array, dtype=np.float32)  # noqa: E731
    else:
        try:
            ckpt = torch.load(file, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
            raise CheckpointError(f"{file}: not a tensor checkpoint that can be loaded safely ({e})") from e
        is_tensor = lambda t: isinstance(t, torch.Tensor)  # noqa: E731
        to_numpy = lambda t: t.detach().to(torch.float32).numpy()  # noqa: E731
    state = ckpt.get("model_state", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{file}: holds no `model_state` dict of tensors; not a GE2E voice encoder checkpoint")
    arrays = {}
    for name, t in state.items():
        if not is_tensor(t):
            raise CheckpointError(f"{file}: model_state entry {name!r} is a {type(t).__name__}, not a tensor")
        arrays[str(name)] = to_numpy(t)
    return arrays


# ---------------------------------------------------------------- torch's legacy format, without torch

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module, name):
        raise CheckpointError(f"refused to load: a header pickle references {module}.{name}")


class _LegacyFile:
    """torch.save's pre-zip layout: pickles of the magic number, the protocol version, sys_info, the
    object (storages as persistent ids), the storage keys; then each storage in key order as an
    int64 element count and its raw little-endian bytes."""

    def __init__(self, path: Path):
        self.path, self.buf = path, path.read_bytes()
        pos, values = 0, []
        for _ in range(3):
            end = self._pickle_end(pos)
            values.append(_NoGlobals(io.BytesIO(self.buf[pos:end])).load())
            pos = end
        if values[0] != _LEGACY_MAGIC:
            raise CheckpointError(f"{path}: not a torch checkpoint (no legacy magic number)")
        if values[2].get("little_endian") is not True:
            raise CheckpointError(f"{path}: big-endian checkpoint; only little-endian is supported")
        self.object_start, self.object_end = pos, self._pickle_end(pos)
        keys_end = self._pickle_end(self.object_end)
        self.keys = _NoGlobals(io.BytesIO(self.buf[self.object_end : keys_end])).load()
        self.data_start = keys_end
        self.layout: dict[str, tuple[np.dtype, int]] = {}  # key -> (dtype, count), from the object pickle
        self.offsets: dict[str, int] | None = None

    def _pickle_end(self, start: int) -> int:
        """Where the pickle starting at `start` ends, found by reading its opcodes (nothing runs)."""
        try:
            *_, (op, _, pos) = pickletools.genops(io.BytesIO(self.buf[start:]))
        except (ValueError, EOFError) as e:
            raise CheckpointError(f"{self.path}: corrupt torch checkpoint ({e})") from e
        return start + pos + 1

    def pickle_bytes(self) -> bytes:
        return self.buf[self.object_start : self.object_end]

    def storage(self, key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        if self.offsets is None:  # the first pass only learns the storages' types and sizes
            self.layout[key] = (np.dtype(dtype), numel)
            return np.zeros(numel, dtype)
        return np.frombuffer(self.buf, dtype, numel, self.offsets[key])

    def locate_storages(self) -> None:
        """Each storage's offset: the records follow one another in key order."""
        pos, self.offsets = self.data_start, {}
        for key in self.keys:
            if key not in self.layout:
                raise CheckpointError(f"{self.path}: storage {key!r} is listed but no tensor uses it")
            dtype, numel = self.layout[key]
            (count,) = struct.unpack_from("<q", self.buf, pos) if pos + 8 <= len(self.buf) else (-1,)
            if count != numel or pos + 8 + numel * dtype.itemsize > len(self.buf):
                raise CheckpointError(f"{self.path}: storage {key!r} is truncated or its size does not match")
            self.offsets[key] = pos + 8
            pos += 8 + numel * dtype.itemsize


class _LegacyUnpickler(_RestrictedUnpickler):
    """Legacy persistent ids carry a sixth field (a view of another storage; never written by
    torch >= 0.4)."""

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) == 6 and pid[5] is None:
            pid = pid[:5]
        return super().persistent_load(pid)


def read_legacy_torch(path: str | Path):
    """Unpickle a legacy-format torch.save file with the restricted unpickler (tensors come back as
    `_Tensor`s viewing the file's bytes): once to learn the storages' types, once to read them."""
    legacy = _LegacyFile(Path(path))
    try:
        _LegacyUnpickler(legacy).load()
        legacy.locate_storages()
        return _LegacyUnpickler(legacy).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{path}: corrupt or unsupported torch pickle ({type(e).__name__}: {e})") from e
