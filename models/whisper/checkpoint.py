"""Whisper checkpoint directories: which format a directory holds and how its files are read.

HF-transformers (`model.safetensors` / `pytorch_model.bin` + `config.json`, with
`generation_config.json` where newer exports keep suppress tokens and alignment heads) and
CTranslate2 (`model.bin`, faster-whisper; int8/int16 weights dequantised here). Names are
mapped by `weights.py`'s tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polyasr.errors import CheckpointError
from polyasr.models.checkpoint_io import read_config, read_safetensors_dir, read_torch_weights
from polyasr.models.weight_map import apply_weight_map
from polyasr.models.whisper.config import WhisperConfig
from polyasr.models.whisper.ct2_format import read_ct2_model
from polyasr.models.whisper.model import param_shapes
from polyasr.models.whisper.weights import CT2_MAP, HF_MAP


@dataclass
class WhisperCheckpoint:
    cfg: WhisperConfig
    params: dict[str, np.ndarray]  # host arrays (memory-mapped where the format allows)
    dtypes: dict[str, str]
    tokenizer_file: Path
    format: str


def detect_format(directory: Path) -> str:
    if (directory / "model.bin").is_file():
        return "ctranslate2"
    if (directory / "model.safetensors").is_file() or (directory / "model.safetensors.index.json").is_file():
        return "hf-safetensors"
    if (directory / "pytorch_model.bin").is_file():
        return "hf-pytorch-bin"
    raise CheckpointError(
        f"{directory}: no Whisper checkpoint here (expected model.safetensors, "
        "pytorch_model.bin or a CTranslate2 model.bin beside config.json and tokenizer.json)"
    )


def load_checkpoint(path: str | Path) -> WhisperCheckpoint:
    """Read a Whisper checkpoint directory of any supported format (a file path means its directory)."""
    directory = Path(path)
    directory = directory.parent if directory.is_file() else directory
    fmt = detect_format(directory)
    config_file = directory / "config.json"
    tokenizer_file = directory / "tokenizer.json"
    for f in (config_file, tokenizer_file):
        if not f.is_file():
            raise CheckpointError(f"{directory}: missing {f.name}, which a Whisper checkpoint directory must have")
    config = read_config(config_file)
    if fmt == "ctranslate2":
        cfg, tensors, dtypes, table = _read_ct2(directory / "model.bin", config)
    else:
        if config.get("model_type") not in (None, "whisper"):
            raise CheckpointError(
                f"{config_file}: model_type is {config.get('model_type')!r}, not a Whisper checkpoint"
            )
        cfg = WhisperConfig.from_dict(_with_generation_config(directory, config))
        if fmt == "hf-safetensors":
            tensors, dtypes = read_safetensors_dir(directory)
        else:
            tensors, dtypes = read_torch_weights(directory / "pytorch_model.bin")
        table = HF_MAP
    params, tags = apply_weight_map(tensors, dtypes, table, param_shapes(cfg), f"{directory} ({fmt})")
    return WhisperCheckpoint(cfg, params, tags, tokenizer_file, fmt)


def _with_generation_config(directory: Path, config: dict) -> dict:
    """HF keeps suppress tokens / alignment heads in generation_config.json on newer exports."""
    gen = read_config(directory / "generation_config.json", optional=True)
    if not gen:
        return config
    merged = dict(config)
    for k in ("suppress_tokens", "begin_suppress_tokens", "alignment_heads"):
        if gen.get(k) is not None:
            merged[k] = gen[k]
    if gen.get("lang_to_id"):
        merged["lang_ids"] = sorted(gen["lang_to_id"].values())
    return merged


def _read_ct2(model_bin: Path, config: dict):
    m = read_ct2_model(model_bin)
    if m.spec_name != "WhisperSpec":
        raise CheckpointError(f"{model_bin}: CTranslate2 model of type {m.spec_name}, not WhisperSpec")
    # CTranslate2 stores identical tensors once and names the others as aliases of it (the tied
    # output projection always; zero biases and unit norms of a fresh model too): resolve them all.
    names = [k for k in m.names() if not k.endswith("_scale")]
    tensors = {k: _dequantize(m, k) for k in names}
    dtypes = {k: "float32" if tensors[k].dtype == np.float32 else m.dtypes[m.aliases.get(k, k)] for k in names}
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    scalars = {k: int(v) for k, v in tensors.items() if v.ndim == 0 and k.endswith("num_heads")}
    try:
        cfg = WhisperConfig.from_ct2(shapes, scalars, config)
    except KeyError as e:
        raise CheckpointError(f"{model_bin}: CTranslate2 Whisper model lacks variable {e}") from e
    return cfg, tensors, dtypes, CT2_MAP


def _dequantize(m, name: str) -> np.ndarray:
    """int8/int16 weights carry a per-row `<name>_scale`: value = q / scale."""
    arr = m.get(name)
    scale = m.get(f"{name}_scale") if f"{name}_scale" in m.names() else None
    if scale is None:
        return arr
    shape = arr.shape
    out = arr.reshape(shape[0], -1).astype(np.float32) / np.asarray(scale, np.float32).reshape(-1, 1)
    return out.reshape(shape)
