"""Reading tensors from checkpoint files into host arrays without executing code.

safetensors: parsed here (8-byte header length, JSON header, raw little-endian data) into
numpy views on one memory map, so a checkpoint costs no copy until a backend converts a
tensor, and no framework (torch or MLX) is needed to read it. bfloat16, which numpy lacks,
comes back as uint16 bits tagged "bfloat16".
torch pickles: only through `torch.load(weights_only=True)`, which refuses any object that
is not a tensor or plain container. `write_safetensors` writes what `polyasr convert` makes of
them: a file that the MLX path (and everything else) reads without torch.
Config and tokenizer files (`config.json`, `model_config.yaml`, `tokenizer.json`, ...) are read
through `read_config` / `parse_config` / `read_hf_tokenizer`, so a malformed one is a
CheckpointError naming the file, never a parser's traceback.
"""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path

import numpy as np

from polyasr.errors import BackendError, CheckpointError

_ST_DTYPES = {
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,
    "F64": np.float64,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def parse_config(text: str | bytes, source: str, fmt: str = "json") -> dict:
    """A JSON or YAML (safe loader: no tags, no objects) mapping -> dict; `source` names the file in errors."""
    try:
        if fmt == "yaml":
            import yaml

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise CheckpointError(f"{source}: not plain YAML ({e})") from e
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{source}: not valid JSON ({e})") from e
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{source}: not UTF-8 text ({e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{source}: not a {'mapping' if fmt == 'yaml' else 'JSON object'}")
    return data


def read_config(path: str | Path, *, optional: bool = False) -> dict:
    """A config file of a checkpoint directory (.json, or .yaml/.yml) -> dict.

    optional: a missing file reads as {} instead of a CheckpointError."""
    path = Path(path)
    if optional and not path.exists():
        return {}
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from e
    return parse_config(data, str(path), "yaml" if path.suffix in (".yaml", ".yml") else "json")


def read_hf_tokenizer(path: str | Path):
    """A `tokenizer.json` -> `tokenizers.Tokenizer`."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on missing or malformed files
        raise CheckpointError(f"{path}: not a readable tokenizer.json ({e})") from e


def read_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """One .safetensors file -> (name -> array view, name -> dtype tag)."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as e:
            raise CheckpointError(f"{path}: empty file, not safetensors") from e
    if len(buf) < 8:
        raise CheckpointError(f"{path}: too short to be safetensors")
    (n,) = struct.unpack("<Q", buf[:8])
    if n > len(buf) - 8:
        raise CheckpointError(f"{path}: corrupt safetensors header (length {n})")
    try:
        header = json.loads(bytes(buf[8 : 8 + n]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from e
    base = 8 + n
    arrays, tags = {}, {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] not in _ST_DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {meta['dtype']}")
        start, end = meta["data_offsets"]
        dt = np.dtype(_ST_DTYPES[meta["dtype"]])
        shape = tuple(meta["shape"])
        if end - start != int(np.prod(shape)) * dt.itemsize or base + end > len(buf):
            raise CheckpointError(f"{path}: tensor {name!r} has inconsistent offsets")
        arrays[name] = np.frombuffer(buf, dtype=dt, count=int(np.prod(shape)), offset=base + start).reshape(shape)
        tags[name] = "bfloat16" if meta["dtype"] == "BF16" else dt.name
    return arrays, tags


def read_safetensors_dir(directory: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """`model.safetensors`, or the shards listed in `model.safetensors.index.json`."""
    index = directory / "model.safetensors.index.json"
    files = ["model.safetensors"]
    if index.exists():
        weight_map = read_config(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index}: no weight_map")
        files = sorted(set(weight_map.values()))
    arrays, tags = {}, {}
    for name in files:
        a, t = read_safetensors(directory / name)
        arrays.update(a)
        tags.update(t)
    from polyasr.models import quantized_checkpoint as qc

    meta = qc.read_metadata(directory)
    if meta is not None:  # `polyasr convert --quantize` output: weight triples -> one QuantizedArray each
        arrays, tags = qc.group_quantized(arrays, tags, meta, str(directory / "model.safetensors"))
    return arrays, tags


def read_torch_weights(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A `pytorch_model.bin`-style state dict, loaded with weights_only=True (no code runs)."""
    import pickle

    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path}: a torch pickle, which needs torch to read (pip install torch); "
            "`polyasr convert` it where torch is installed to get a checkpoint that loads without it"
        ) from None

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise CheckpointError(f"{path}: not a plain tensor checkpoint that can be loaded safely ({e})") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    arrays, tags = {}, {}
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            continue
        if t.dtype == torch.bfloat16:
            arrays[name], tags[name] = t.view(torch.int16).numpy().view(np.uint16), "bfloat16"
        else:
            arrays[name] = t.numpy()
            tags[name] = arrays[name].dtype.name
    return arrays, tags


def write_safetensors(
    tensors: dict[str, np.ndarray], dtypes: dict[str, str], path: str | Path, metadata: dict[str, str]
) -> Path:
    """Write host arrays as one safetensors file, dtypes kept (bf16, held as its uint16 bits, goes in
    as BF16 bit for bit). Written to `<path>.partial` and renamed, so a failure leaves no half file."""
    try:
        from safetensors import TensorSpec, serialize_file
    except ImportError as e:  # TensorSpec (raw pointers, any dtype name) is safetensors >= 0.8
        raise BackendError(
            "writing safetensors needs the safetensors package >= 0.8 (pip install -U 'safetensors>=0.8')"
        ) from e
    path = Path(path)
    keep, specs = [], {}
    for name in sorted(tensors):
        arr = np.require(tensors[name], requirements="C")  # not ascontiguousarray: it makes 0-d arrays 1-d
        keep.append(arr)  # the serializer reads raw pointers: keep every buffer alive until it is done
        tag = dtypes.get(name, arr.dtype.name)
        if tag == "bfloat16" and arr.dtype != np.uint16:
            raise CheckpointError(f"bfloat16 tensor {name!r} held as {arr.dtype}, expected its uint16 bits")
        specs[name] = TensorSpec(dtype=tag, shape=arr.shape, data_ptr=arr.ctypes.data, data_len=arr.nbytes)
    tmp = path.with_name(path.name + ".partial")
    serialize_file(specs, str(tmp), metadata={"format": "np", **metadata})
    tmp.chmod(0o644)  # the serializer creates its file 0600; a converted checkpoint is for sharing
    tmp.replace(path)
    return path
