"""GigaAM checkpoints -> a plain config dict and host arrays, without executing any code.

Three layouts (see models/gigaam/README.md for where each fact comes from):

- ``gigaam-ckpt``: GigaAM's released ``.ckpt``, a torch zip archive whose pickle holds
  ``{"cfg": omegaconf.DictConfig, "state_dict": {name: tensor}}``. The e2e variants ship
  their SentencePiece model beside it as ``<name>_tokenizer.model``.
- ``hf-hub``: ai-sage/GigaAM-v3 on the hub: ``config.json`` (the GigaAM cfg sits under
  ``cfg.model.cfg``), ``pytorch_model.bin`` (names prefixed ``model.``), ``tokenizer.model``
  for e2e, and ``modeling_gigaam.py``, remote code that is never imported.
- ``safetensors``: written by ``polyasr convert``: ``model.safetensors``, ``config.json``
  (``{"model_type": "gigaam", "polyasr_format": 1, "gigaam_cfg": cfg}``), ``tokenizer.model``.

Torch pickles are read by our own ``pickle.Unpickler`` over the zip archive: every global
the pickle names must be on an explicit allowlist (tensor rebuild, storage types,
OrderedDict, omegaconf's containers and nodes), and the allowed ones resolve to inert local
stand-ins, so neither torch nor omegaconf is imported and nothing the file names is called.
Storages become numpy views on one memory map; bfloat16 comes back as uint16 bits tagged
"bfloat16", as in ``polyasr.models.checkpoint_io``. Tensor names are always GigaAM's own
(``preprocessor.``, ``encoder.``, ``head.``), whatever the layout.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import json
import mmap
import pickle
import shutil
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polyasr.errors import CheckpointError, ModelNotFoundError
from polyasr.models.checkpoint_io import read_config, read_safetensors_dir, write_safetensors

POLYASR_FORMAT = 1
FORMATS = ("gigaam-ckpt", "hf-hub", "safetensors")


@dataclass
class GigaAMCheckpoint:
    cfg: dict  # the released config as plain dicts/lists/scalars (cfg["encoder"]["n_layers"], ...)
    tensors: dict[str, np.ndarray]  # GigaAM's state-dict names -> host arrays (memory-mapped)
    dtypes: dict[str, str]  # name -> dtype tag ("bfloat16" for raw bf16 bits)
    tokenizer_model: Path | None  # SentencePiece model of the e2e variants
    format: str  # one of FORMATS


# ---------------------------------------------------------------- allowlisted stand-ins


class _Inert:
    """A pickled omegaconf object: keeps the state the pickle gives it, does nothing else."""

    def __init__(self, *args, **kwargs):
        self.state = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {"_state": state}


class _Container(_Inert):
    """omegaconf DictConfig / ListConfig: the value is in state["_content"]."""


class _Node(_Inert):
    """omegaconf value nodes (AnyNode, StringNode, ...): the value is in state["_val"]."""


class _TypeRef:
    """A type named in omegaconf metadata (typing.Any, dict, int, ...): a name, never callable."""

    def __init__(self, name: str):
        self.name = name


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype
    tag: str


@dataclass(frozen=True)
class _Storage:
    array: np.ndarray  # 1-D, the storage's elements
    tag: str


@dataclass(frozen=True)
class _Tensor:
    array: np.ndarray
    tag: str


def _rebuild_tensor(storage, offset, size, stride, *_):
    """torch._utils._rebuild_tensor_v2 on numpy: a bounds-checked strided view of the storage."""
    if not isinstance(storage, _Storage):
        raise CheckpointError("tensor rebuilt from something that is not a storage")
    if not (isinstance(offset, int) and all(isinstance(v, int) for v in (*size, *stride)) and len(size) == len(stride)):
        raise CheckpointError("tensor with malformed offset, size or stride")
    base, dt = storage.array, storage.array.dtype
    if any(n == 0 for n in size):
        return _Tensor(np.empty(tuple(size), dt), storage.tag)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if offset < 0 or min(stride, default=0) < 0 or min(size, default=1) < 0 or last >= base.size:
        raise CheckpointError(f"tensor of size {tuple(size)} reaches outside its storage ({base.size} elements)")
    view = np.lib.stride_tricks.as_strided(
        base[offset:], shape=tuple(size), strides=tuple(s * dt.itemsize for s in stride), writeable=False
    )
    return _Tensor(view, storage.tag)


def _rebuild_parameter(data, *_):
    return data


def _empty_defaultdict(*_):
    return {}  # omegaconf's resolver cache: contents never matter, the factory is never called


_STORAGES = {
    f"{n}Storage": (np.dtype(d), t)
    for n, d, t in (
        ("Float", np.float32, "float32"),
        ("Double", np.float64, "float64"),
        ("Half", np.float16, "float16"),
        ("BFloat16", np.uint16, "bfloat16"),
        ("Long", np.int64, "int64"),
        ("Int", np.int32, "int32"),
        ("Short", np.int16, "int16"),
        ("Char", np.int8, "int8"),
        ("Byte", np.uint8, "uint8"),
        ("Bool", np.bool_, "bool"),
    )
}

_OMEGACONF_NODES = ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "BytesNode", "PathNode")

ALLOWED_GLOBALS: dict[str, object] = {
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "collections.OrderedDict": collections.OrderedDict,
    "collections.defaultdict": _empty_defaultdict,
    "omegaconf.dictconfig.DictConfig": _Container,
    "omegaconf.listconfig.ListConfig": _Container,
    "omegaconf.base.ContainerMetadata": _Inert,
    "omegaconf.base.Metadata": _Inert,
    **{f"omegaconf.nodes.{n}": _Node for n in _OMEGACONF_NODES},
    **{f"torch.{n}": _StorageType(d, t) for n, (d, t) in _STORAGES.items()},
    **{f"typing.{n}": _TypeRef(f"typing.{n}") for n in ("Any", "Dict", "List", "Optional", "Union")},
    **{
        f"builtins.{n}": _TypeRef(f"builtins.{n}")
        for n in ("dict", "list", "tuple", "int", "float", "str", "bool", "bytes", "object")
    },
}


# ---------------------------------------------------------------- the torch zip archive


class _TorchZip:
    """A torch.save zip archive: `<root>/data.pkl` plus one `<root>/data/<key>` record per storage."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise CheckpointError(f"{path}: not a torch zip archive ({e})") from e
        pkls = [n for n in self.zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise CheckpointError(f"{path}: a zip file, but not a torch checkpoint (no <root>/data.pkl)")
        self.root = pkls[0][: -len("data.pkl")]
        order = self._text("byteorder") or "little"
        if order != "little":
            raise CheckpointError(f"{path}: {order}-endian checkpoint; only little-endian is supported")
        with open(path, "rb") as f:
            self.buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    def _text(self, name: str) -> str | None:
        try:
            return self.zf.read(self.root + name).decode().strip()
        except KeyError:
            return None

    def pickle_bytes(self) -> bytes:
        return self.zf.read(self.root + "data.pkl")

    def storage(self, key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        """The record of one storage as a read-only array (a view on the file when stored uncompressed)."""
        try:
            info = self.zf.getinfo(f"{self.root}data/{key}")
        except KeyError as e:
            raise CheckpointError(f"{self.path}: storage {key!r} named by the pickle is missing") from e
        if info.file_size < numel * dtype.itemsize:
            raise CheckpointError(f"{self.path}: storage {key!r} is shorter than its {numel} elements")
        if numel == 0:
            return np.empty(0, dtype)
        if info.compress_type != zipfile.ZIP_STORED:
            return np.frombuffer(self.zf.read(info), dtype, numel)
        header = self.buf[info.header_offset : info.header_offset + 30]
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            raise CheckpointError(f"{self.path}: corrupt zip entry for storage {key!r}")
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        return np.frombuffer(self.buf, dtype, numel, info.header_offset + 30 + name_len + extra_len)


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only ALLOWED_GLOBALS; anything else stops the load before it can be called."""

    def __init__(self, archive: _TorchZip, extra_globals: dict[str, object] | None = None):
        super().__init__(io.BytesIO(archive.pickle_bytes()))
        self.archive = archive
        self.storages: dict[str, _Storage] = {}
        self.allowed = {**ALLOWED_GLOBALS, **(extra_globals or {})}

    def find_class(self, module: str, name: str):
        # Protocol-2 pickles spell Python 3 names the Python 2 way (__builtin__.long).
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        qualified = f"{module}.{name}"
        if qualified not in self.allowed:
            raise CheckpointError(
                f"{self.archive.path}: refused to load: the pickle references {qualified!r}, "
                "which is not a tensor, a storage or a known inert metadata object"
            )
        return self.allowed[qualified]

    def persistent_load(self, pid):
        if not (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
            and isinstance(pid[2], str)
            and isinstance(pid[4], int)
        ):
            raise CheckpointError(f"{self.archive.path}: unexpected persistent id in the pickle: {pid!r:.80}")
        _, stype, key, _location, numel = pid
        if key not in self.storages:
            self.storages[key] = _Storage(self.archive.storage(key, stype.dtype, numel), stype.tag)
        return self.storages[key]


def read_torch_zip(path: str | Path, extra_globals: dict[str, object] | None = None):
    """Unpickle a torch.save archive with the restricted unpickler (tensors come back as _Tensor).
    extra_globals: more qualified names the pickle may reference, each resolved to the inert stand-in
    given (a caller's checkpoint metadata classes)."""
    archive = _TorchZip(Path(path))
    try:
        return _RestrictedUnpickler(archive, extra_globals).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{path}: corrupt or unsupported torch pickle ({type(e).__name__}: {e})") from e
    finally:
        archive.zf.close()  # the arrays keep the memory map alive, not the zip handle


# ---------------------------------------------------------------- pickled objects -> plain data


def _plain(obj, where: str):
    """omegaconf stand-ins -> plain dicts/lists/scalars; anything else in a config is refused."""
    if isinstance(obj, _Container):
        return _plain(obj.state.get("_content"), where)  # None, or a "${...}" / "???" string, stays as is
    if isinstance(obj, _Node):
        return _plain(obj.state.get("_val"), where)
    if isinstance(obj, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    raise CheckpointError(f"config value {where} is a {type(obj).__name__}, not a plain value")


def _tensors_of(state, path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: the state dict is empty or not a mapping")
    arrays, tags = {}, {}
    for name, t in state.items():
        if not isinstance(t, _Tensor):
            raise CheckpointError(f"{path}: state-dict entry {name!r} is a {type(t).__name__}, not a tensor")
        arrays[str(name)], tags[str(name)] = t.array, t.tag
    return arrays, tags


def _strip_prefix(arrays: dict, tags: dict, prefix: str) -> tuple[dict, dict]:
    """The hub wraps GigaAM's module in `GigaAMModel.model`: drop that prefix when every name has it."""
    if not all(k.startswith(prefix) for k in arrays):
        return arrays, tags
    return {k[len(prefix) :]: v for k, v in arrays.items()}, {k[len(prefix) :]: v for k, v in tags.items()}


# ---------------------------------------------------------------- the three layouts


def detect_format(path: str | Path) -> str:
    """ "gigaam-ckpt" for a torch zip file (any name), "hf-hub" or "safetensors" for a directory."""
    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError(f"{path} does not exist")
    if path.is_file():
        if zipfile.is_zipfile(path):
            return "gigaam-ckpt"
        raise CheckpointError(f"{path}: not a GigaAM checkpoint (expected a torch zip archive like v3_ctc.ckpt)")
    config = _read_config(path) if (path / "config.json").is_file() else None
    if config is not None and "polyasr_format" in config:
        return "safetensors"
    has_weights = any(
        (path / n).is_file() for n in ("pytorch_model.bin", "model.safetensors", "model.safetensors.index.json")
    )
    if config is not None and isinstance(config.get("cfg"), dict) and has_weights:
        return "hf-hub"
    raise CheckpointError(
        f"{path}: no GigaAM checkpoint here (expected config.json with pytorch_model.bin "
        "(hub layout), config.json with model.safetensors (polyasr convert), or a .ckpt file)"
    )


def read_gigaam_checkpoint(path: str | Path) -> GigaAMCheckpoint:
    """Read any of the three layouts; `path` is the .ckpt file or the checkpoint directory."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "gigaam-ckpt":
        return _read_ckpt(path)
    if fmt == "hf-hub":
        return _read_hub(path)
    return _read_converted(path)


def _read_config(directory: Path) -> dict:
    return read_config(directory / "config.json")


def _read_ckpt(path: Path) -> GigaAMCheckpoint:
    obj = read_torch_zip(path)
    if not isinstance(obj, dict) or "cfg" not in obj or "state_dict" not in obj:
        keys = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: not a GigaAM .ckpt (expected keys cfg and state_dict, found {keys})")
    try:
        cfg = _plain(obj["cfg"], "cfg")
    except RecursionError as e:  # the pickle memo can build a config that contains itself
        raise CheckpointError(f"{path}: cfg is cyclic or nested too deeply") from e
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: cfg is not a mapping")
    arrays, tags = _tensors_of(obj["state_dict"], path)
    # gigaam.load_model downloads the e2e tokenizer beside the checkpoint as <name>_tokenizer.model.
    tokenizer = next(
        (p for p in (path.with_name(f"{path.stem}_tokenizer.model"), path.with_name("tokenizer.model")) if p.is_file()),
        None,
    )
    return GigaAMCheckpoint(cfg, arrays, tags, tokenizer, "gigaam-ckpt")


def _read_hub(directory: Path) -> GigaAMCheckpoint:
    config = _read_config(directory)
    model = config["cfg"].get("model")
    cfg = model.get("cfg") if isinstance(model, dict) else None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{directory / 'config.json'}: no GigaAM config at cfg.model.cfg")
    if (directory / "pytorch_model.bin").is_file():
        arrays, tags = _tensors_of(read_torch_zip(directory / "pytorch_model.bin"), directory / "pytorch_model.bin")
    else:
        arrays, tags = read_safetensors_dir(directory)
    arrays, tags = _strip_prefix(arrays, tags, "model.")
    tokenizer = directory / "tokenizer.model"
    return GigaAMCheckpoint(cfg, arrays, tags, tokenizer if tokenizer.is_file() else None, "hf-hub")


def _read_converted(directory: Path) -> GigaAMCheckpoint:
    config = _read_config(directory)
    if config.get("model_type") != "gigaam" or not isinstance(config.get("gigaam_cfg"), dict):
        raise CheckpointError(f"{directory / 'config.json'}: not a GigaAM checkpoint written by polyasr convert")
    if config["polyasr_format"] != POLYASR_FORMAT:
        raise CheckpointError(
            f"{directory}: polyasr_format {config['polyasr_format']!r} is not {POLYASR_FORMAT}; "
            "convert the checkpoint again with this polyasr"
        )
    if not (directory / "model.safetensors").is_file():
        raise CheckpointError(f"{directory}: model.safetensors is missing")
    arrays, tags = read_safetensors_dir(directory)
    tokenizer = directory / "tokenizer.model"
    return GigaAMCheckpoint(
        config["gigaam_cfg"], arrays, tags, tokenizer if tokenizer.is_file() else None, "safetensors"
    )


def write_safetensors_dir(ckpt: GigaAMCheckpoint, out_dir: str | Path) -> Path:
    """Write `ckpt` as the polyasr layout: model.safetensors (dtypes kept, bf16 as BF16),
    config.json, and tokenizer.model when the checkpoint has one. Returns the directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(
        ckpt.tensors,
        ckpt.dtypes,
        out / "model.safetensors",
        {"polyasr_format": str(POLYASR_FORMAT), "source_format": ckpt.format},
    )
    config = {"model_type": "gigaam", "polyasr_format": POLYASR_FORMAT, "gigaam_cfg": ckpt.cfg}
    (out / "config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    if ckpt.tokenizer_model is not None:
        shutil.copyfile(ckpt.tokenizer_model, out / "tokenizer.model")
    return out


def check_variant(ckpt: GigaAMCheckpoint, model_id: str) -> None:
    """Refuse a checkpoint that is not the model `model_id` names: a CTC head is required, with
    a character vocabulary for gigaam-v3-ctc and a SentencePiece one (vocabulary null) for e2e."""
    head, decoding = ckpt.cfg.get("head") or {}, ckpt.cfg.get("decoding") or {}
    name = ckpt.cfg.get("model_name", "this checkpoint")
    target = str(head.get("_target_", "")) if isinstance(head, dict) else ""
    if not target.endswith("CTCHead"):
        raise CheckpointError(f"{name} has head {target or '(none)'}; {model_id} needs a CTC head (CTCHead)")
    is_e2e = isinstance(decoding, dict) and decoding.get("vocabulary") is None
    want_e2e = "e2e" in model_id
    if is_e2e != want_e2e:
        kind = {True: "a SentencePiece (e2e) vocabulary", False: "a character vocabulary"}
        other = "gigaam-v3-e2e-ctc" if is_e2e else "gigaam-v3-ctc"
        raise CheckpointError(f"{model_id} needs {kind[want_e2e]} but {name} has {kind[is_e2e]}; use --model {other}")
    if is_e2e and ckpt.tokenizer_model is None:
        raise CheckpointError(
            f"{name} is an e2e model but its tokenizer.model was not found next to it "
            "(for a .ckpt: <name>_tokenizer.model in the same folder)"
        )


def convert(spec, src: Path, out: Path) -> str:
    """`polyasr convert`: a GigaAM .ckpt / hub directory -> model.safetensors + config.json
    (+ tokenizer.model) in `out`, loadable without torch. Returns the line the CLI prints."""
    ckpt = read_gigaam_checkpoint(src)
    check_variant(ckpt, spec.id)
    write_safetensors_dir(ckpt, out)
    return f"{src} ({ckpt.format}, {len(ckpt.tensors)} tensors) -> {out}"
