"""Finding and reading a WeSpeaker ResNet checkpoint.

Two layouts, both torch pickles (zip archives; WeSpeaker's older files may be torch's legacy format):
- ``pyannote``: pyannote's `pytorch_model.bin` (`pyannote/wespeaker-voxceleb-resnet34-LM`, written
  by pyannote.audio's `models/embedding/wespeaker/convert.py`): ``{"state_dict": {"resnet.<name>":
  tensor}, "pyannote.audio": {"versions", "architecture", "specifications"}, "pytorch-lightning_version"}``.
  The `specifications` entry is a pickled `pyannote.audio.core.task.Specifications` dataclass with
  its `Problem` / `Resolution` enums: those three names resolve to inert stand-ins (nothing of
  pyannote is imported or run); any other global is refused.
- ``wespeaker``: WeSpeaker's own `avg_model.pt`: the model's state dict itself, unprefixed, with the
  training head's `projection.weight`.

Read with `torch.load(weights_only=True)` where torch is installed, else (MLX) with GigaAM's
restricted unpickler, torch never imported. Nothing is downloaded: without a path, the Hugging Face
cache is searched for pyannote's file (where pyannote.audio leaves it).
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np

from polyasr.errors import CheckpointError, ModelNotFoundError
from polyasr.models.gigaam.checkpoint import _Inert, _Tensor, read_torch_zip

HUB_REPO = "pyannote/wespeaker-voxceleb-resnet34-LM"
FILES = {"pytorch_model.bin": "pyannote", "avg_model.pt": "wespeaker"}
FORMATS = ("pyannote", "wespeaker")
# What a pyannote checkpoint pickles besides tensors: its task specifications (a dataclass and two
# enums), kept as inert objects and never looked at.
PYANNOTE_METADATA = (
    "pyannote.audio.core.task.Specifications",
    "pyannote.audio.core.task.Problem",
    "pyannote.audio.core.task.Resolution",
)
HOW_TO_GET = (
    f"pass its file with --embedding-path (embedding_path=...): `pytorch_model.bin` of {HUB_REPO} "
    "(e.g. `huggingface-cli download pyannote/wespeaker-voxceleb-resnet34-LM pytorch_model.bin`), "
    "or WeSpeaker's own `avg_model.pt`, or a directory holding one"
)


class _PyannoteMetadata(_Inert):
    """A pickled pyannote task object (Specifications, Problem, Resolution): state kept, nothing run."""


def find_checkpoint(path: str | os.PathLike | None = None) -> Path:
    """`path` (a file, or a directory holding `pytorch_model.bin` or `avg_model.pt`), else pyannote's
    file in the Hugging Face cache. Raises ModelNotFoundError saying what to pass."""
    what = "the WeSpeaker ResNet34 speaker embedding's checkpoint"
    if path is not None:
        given = Path(path).expanduser()
        if given.is_dir():
            found = [given / name for name in FILES if (given / name).is_file()]
            if not found:
                raise ModelNotFoundError(f"{what}: {str(given)!r} holds neither {' nor '.join(FILES)}; {HOW_TO_GET}")
            return found[0]
        if not given.is_file():
            raise ModelNotFoundError(f"{what} {str(given)!r} does not exist; {HOW_TO_GET}")
        return given
    cached = _from_hub_cache()
    if cached is None:
        raise ModelNotFoundError(f"{what} is not in the Hugging Face cache ({HUB_REPO}); {HOW_TO_GET}")
    return cached


def _from_hub_cache() -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    from polyasr.locate import _hub_cache  # the registry's module: imported when needed

    found = try_to_load_from_cache(HUB_REPO, "pytorch_model.bin", cache_dir=_hub_cache(None))
    return Path(found) if isinstance(found, str) else None


def read_checkpoint(file: Path, use_torch: bool = True) -> tuple[dict[str, np.ndarray], str]:
    """(the state dict's tensors as host numpy arrays, the layout: "pyannote" | "wespeaker"); with
    use_torch False (or no torch installed) through our restricted readers, torch never imported."""
    try:
        if not use_torch:
            raise ImportError
        import torch
    except ImportError:
        ckpt = _read_restricted(file)
        is_tensor = lambda t: isinstance(t, _Tensor)  # noqa: E731
        to_numpy = lambda t: np.asarray(t.array)  # noqa: E731
    else:
        ckpt = _read_torch(file, torch)
        is_tensor = lambda t: isinstance(t, torch.Tensor)  # noqa: E731
        to_numpy = lambda t: t.detach().numpy()  # noqa: E731
    if not isinstance(ckpt, dict) or not ckpt:
        raise CheckpointError(f"{file}: holds no dict of tensors; not a WeSpeaker ResNet checkpoint")
    layout = "pyannote" if "state_dict" in ckpt else "wespeaker"
    state = ckpt["state_dict"] if layout == "pyannote" else ckpt
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: `state_dict` is a {type(state).__name__}, not a dict of tensors")
    arrays = {}
    for name, t in state.items():
        if not is_tensor(t):
            raise CheckpointError(f"{file}: state-dict entry {name!r} is a {type(t).__name__}, not a tensor")
        arrays[str(name)] = to_numpy(t)
    return arrays, layout


def _read_torch(file: Path, torch):
    stand_ins = [(_PyannoteMetadata, name) for name in PYANNOTE_METADATA]
    try:
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        # torch's message is a page of advice; what matters is the global it refused, when it did
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        why = f"it references {refused.group(1)}" if refused else (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(
            f"{file}: refused to load: not a tensor checkpoint that can be read safely ({why})"
        ) from e


def _read_restricted(file: Path):
    from polyasr.models.resemblyzer_ge2e.checkpoint import read_legacy_torch

    if zipfile.is_zipfile(file):
        return read_torch_zip(file, {name: _PyannoteMetadata for name in PYANNOTE_METADATA})
    return read_legacy_torch(file)
