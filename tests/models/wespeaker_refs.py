"""pyannote.audio's WeSpeaker ResNet module (the reference), imported from the installed
distribution without the package's `__init__` (it loads lightning, torchcodec and ~40 more
packages that the module never uses), and its published checkpoint layout.

The modules under test are pyannote's own files, run as they are: `models/embedding/wespeaker/
__init__.py` (the fbank and centering of `BaseWeSpeakerResNet.compute_fbank`, `WeSpeakerResNet34`),
its `resnet.py`, `models/blocks/pooling.py` and `utils/receptive_field.py`. Only the parent packages
and the two base classes the wrapper subclasses are stand-ins: `core.model.Model` is a
`torch.nn.Module` with Lightning's `save_hyperparameters` (the named arguments of the caller, read
as `self.hparams.<name>`), and `core.task` holds `Task` and the `Specifications` dataclass with its
`Problem` / `Resolution` enums, field for field pyannote's, so that a checkpoint written here
pickles them under pyannote's names as `convert.py` does.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import importlib.util
import inspect
import sys
import types
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchaudio.compliance.kaldi")
pytest.importorskip("einops")

_PACKAGES = ("pyannote.audio", "pyannote.audio.core", "pyannote.audio.models", "pyannote.audio.models.blocks",
             "pyannote.audio.models.embedding", "pyannote.audio.utils")  # fmt: skip


class _Model(torch.nn.Module):
    """pyannote.audio.core.model.Model, as much of it as the WeSpeaker wrapper calls."""

    def __init__(self, sample_rate: int = 16000, num_channels: int = 1, task=None):
        super().__init__()

    def save_hyperparameters(self, *names):
        caller = inspect.currentframe().f_back.f_locals
        self.hparams = types.SimpleNamespace(**{n: caller[n] for n in names})


class Problem(enum.Enum):
    BINARY_CLASSIFICATION = 0
    MONO_LABEL_CLASSIFICATION = 1
    MULTI_LABEL_CLASSIFICATION = 2
    REPRESENTATION = 3
    REGRESSION = 4


class Resolution(enum.Enum):
    FRAME = 1
    CHUNK = 2


@dataclasses.dataclass
class Specifications:
    problem: Problem
    resolution: Resolution
    duration: float
    min_duration: float | None = None
    warm_up: tuple[float, float] | None = (0.0, 0.0)
    classes: list[str] | None = None
    powerset_max_classes: int | None = None
    permutation_invariant: bool = False


def _root() -> Path:
    try:
        from importlib import metadata

        dist = metadata.distribution("pyannote.audio")
    except Exception:
        from conftest import skip_missing

        skip_missing("pyannote.audio (its WeSpeaker module is the reference)")
    return Path(dist.locate_file("pyannote/audio"))


def load_module():
    """pyannote.audio.models.embedding.wespeaker, loaded once; the stand-in packages stay registered
    (under pyannote's names, so checkpoints pickle their task objects as pyannote's)."""
    name = "pyannote.audio.models.embedding.wespeaker"
    if name in sys.modules:
        return sys.modules[name]
    root = _root()
    for pkg in _PACKAGES:
        module = types.ModuleType(pkg)
        module.__path__ = [str(root.joinpath(*pkg.split(".")[2:]))]
        sys.modules[pkg] = module
    core_model = types.ModuleType("pyannote.audio.core.model")
    core_model.Model = _Model
    core_task = types.ModuleType("pyannote.audio.core.task")
    core_task.Task = object
    for cls in (Problem, Resolution, Specifications):
        cls.__module__ = "pyannote.audio.core.task"
        setattr(core_task, cls.__name__, cls)
    sys.modules |= {"pyannote.audio.core.model": core_model, "pyannote.audio.core.task": core_task}
    return importlib.import_module(name)


def random_model(tiny: bool, seed: int = 0):
    """pyannote's WeSpeakerResNet34 in eval mode with random weights, BatchNorm statistics included;
    tiny: its `resnet` replaced by pyannote's ResNet at 4 base channels, blocks [2, 1, 1, 1], 8-d."""
    ws = load_module()
    torch.manual_seed(seed)
    model = ws.WeSpeakerResNet34()
    if tiny:
        resnet = importlib.import_module("pyannote.audio.models.embedding.wespeaker.resnet")
        model.resnet = resnet.ResNet(resnet.BasicBlock, [2, 1, 1, 1], m_channels=4, feat_dim=80, embed_dim=8,
                                     two_emb_layer=False)  # fmt: skip
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(1000)
    return model.eval()


def save_pyannote_checkpoint(model, path: Path) -> Path:
    """`model` as pyannote's `pytorch_model.bin` (convert.py + Model.on_save_checkpoint)."""
    spec = Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=5.0)
    checkpoint = {
        "state_dict": model.state_dict(),
        "pyannote.audio": {
            "versions": {"pyannote.audio": "3.1.0"},
            "architecture": {"module": "pyannote.audio.models.embedding.wespeaker", "class": "WeSpeakerResNet34"},
            "specifications": spec,
        },
        "pytorch-lightning_version": "2.1.0",
    }
    torch.save(checkpoint, path)
    return path


def save_wespeaker_checkpoint(model, path: Path) -> Path:
    """`model`'s network as WeSpeaker's `avg_model.pt`: its state dict unprefixed, with the training
    head's projection."""
    state = {k.removeprefix("resnet."): v for k, v in model.state_dict().items()}
    state["projection.weight"] = torch.randn(10, model.resnet.embed_dim)
    torch.save(state, path)
    return path


def reference_embedding(model, wav):
    """pyannote's forward of one mono signal (N,) float32 numpy -> (embed_dim,) numpy."""
    with torch.no_grad():
        return model(torch.from_numpy(wav)[None, None])[0].numpy()
