"""Finding and reading the GE2E voice encoder's `pretrained.pt`.

The `resemblyzer` PyPI package ships it as `resemblyzer/pretrained.pt`: a torch pickle in torch's
legacy (pre-zip) format of `{"step", "model_state", "optimizer_state"}`. It is found through the
installed distribution's file list (never by importing resemblyzer, which loads librosa and
webrtcvad) and read with `torch.load(weights_only=True)`; only `model_state` is kept.
"""

from __future__ import annotations

import os
import pickle
from importlib import metadata
from pathlib import Path

import numpy as np

from polyasr.errors import CheckpointError, ModelNotFoundError

PACKAGE = "resemblyzer"
WEIGHTS_FILE = "pretrained.pt"
INSTALL = "`pip install 'polyasr[diarize]'` (or `pip install resemblyzer`)"


def find_weights(path: str | os.PathLike | None = None) -> Path:
    """`path` (a file, or a directory holding `pretrained.pt`), else the installed resemblyzer
    package's file. Raises ModelNotFoundError saying what to install."""
    if path is not None:
        given = Path(path).expanduser()
        file = given / WEIGHTS_FILE if given.is_dir() else given
        if not file.is_file():
            raise ModelNotFoundError(f"GE2E voice encoder weights {str(file)!r} do not exist")
        return file
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"the default speaker embedding (Resemblyzer's GE2E voice encoder) comes from the {PACKAGE} "
            f"package, which is not installed; {INSTALL}"
        ) from None
    for rel in dist.files or ():
        if rel.name == WEIGHTS_FILE and rel.parent.name == PACKAGE:
            file = Path(dist.locate_file(rel))
            if file.is_file():
                return file
    raise ModelNotFoundError(
        f"the installed {PACKAGE} {dist.version} ships no {PACKAGE}/{WEIGHTS_FILE}; reinstall it: "
        f"`pip install --force-reinstall {PACKAGE}`"
    )


def read_checkpoint(file: Path) -> dict[str, np.ndarray]:
    """The `model_state` tensors of a voice encoder checkpoint, as host numpy arrays."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{file}: a torch pickle, which needs torch to read (pip install torch)") from None
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{file}: not a tensor checkpoint that can be loaded safely ({e})") from e
    state = ckpt.get("model_state", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{file}: holds no `model_state` dict of tensors; not a GE2E voice encoder checkpoint")
    arrays = {}
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{file}: model_state entry {name!r} is a {type(t).__name__}, not a tensor")
        arrays[str(name)] = t.detach().to(torch.float32).numpy()
    return arrays
