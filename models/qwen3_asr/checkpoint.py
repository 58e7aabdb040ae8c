"""Qwen3-ASR checkpoint directories: `config.json` + `model.safetensors` (or shards + index), in
Qwen's published layout or transformers' `qwen3_asr` layout (`config.py` tells which); names are
mapped by `weights.py`'s tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polyasr.errors import CheckpointError
from polyasr.models.checkpoint_io import read_config, read_safetensors_dir
from polyasr.models.qwen3_asr.config import Qwen3ASRConfig
from polyasr.models.qwen3_asr.model import param_shapes
from polyasr.models.qwen3_asr.weights import check_present, qwen_map, transformers_map
from polyasr.models.weight_map import apply_weight_map, in_canonical_names


@dataclass
class Checkpoint:
    cfg: Qwen3ASRConfig
    params: dict[str, np.ndarray]
    dtypes: dict[str, str]
    directory: Path
    format: str


def checkpoint_dir(path, what: str) -> Path:
    """The directory of a Qwen3 checkpoint (`path` or the directory of a file in it), checked to hold
    config.json and the safetensors weights; `what` names the model in the error."""
    directory = Path(path)
    if directory.is_file():
        directory = directory.parent
    if not (directory / "config.json").exists():
        raise CheckpointError(
            f"{directory}: no config.json; a {what} checkpoint directory has config.json, "
            "model.safetensors (or shards + model.safetensors.index.json) and tokenizer files"
        )
    if not (directory / "model.safetensors").exists() and not (directory / "model.safetensors.index.json").exists():
        raise CheckpointError(f"{directory}: no model.safetensors nor model.safetensors.index.json")
    return directory


def load_checkpoint(path) -> Checkpoint:
    """A Qwen3-ASR directory (config.json + model.safetensors or shards + index) -> canonical params."""
    directory = checkpoint_dir(path, "Qwen3-ASR")
    config = directory / "config.json"
    cfg = Qwen3ASRConfig.from_dict(read_config(config))
    cfg.check()
    tensors, tags = read_safetensors_dir(directory)
    t = cfg.text
    make = qwen_map if cfg.layout == "qwen" else transformers_map
    fmt = "qwen-safetensors" if cfg.layout == "qwen" else "hf-safetensors"
    wm, source = make(t.tie_word_embeddings, t.attention_bias), f"{directory} ({fmt})"
    if not in_canonical_names(tensors, wm, param_shapes(cfg)):  # a quantised checkpoint is in our names
        check_present(tensors, wm, cfg, source)
    params, dtypes = apply_weight_map(tensors, tags, wm, param_shapes(cfg), source)
    return Checkpoint(cfg, params, dtypes, directory, fmt)
