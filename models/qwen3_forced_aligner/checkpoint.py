"""Qwen3-ForcedAligner checkpoint directories: `config.json` + `model.safetensors` (or shards +
index) + the Qwen2 tokenizer, in Qwen's published layout or transformers' (`config.py` tells which)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polyasr.models.checkpoint_io import read_config, read_safetensors_dir
from polyasr.models.qwen3_asr.checkpoint import checkpoint_dir
from polyasr.models.qwen3_asr.weights import check_present
from polyasr.models.qwen3_forced_aligner.config import ForcedAlignerConfig
from polyasr.models.qwen3_forced_aligner.model import param_shapes
from polyasr.models.qwen3_forced_aligner.weights import aligner_qwen_map, aligner_transformers_map
from polyasr.models.weight_map import apply_weight_map, in_canonical_names


@dataclass
class Checkpoint:
    cfg: ForcedAlignerConfig
    params: dict[str, np.ndarray]
    dtypes: dict[str, str]
    directory: Path
    format: str


def load_checkpoint(path) -> Checkpoint:
    """A Qwen3-ForcedAligner directory -> config and canonical params (every tensor checked by name and shape)."""
    directory = checkpoint_dir(path, "Qwen3-ForcedAligner")
    processor = read_config(directory / "processor_config.json", optional=True)
    cfg = ForcedAlignerConfig.from_dict(read_config(directory / "config.json"), processor)
    cfg.check()
    tensors, tags = read_safetensors_dir(directory)
    bias = cfg.text.attention_bias
    wm = aligner_qwen_map(bias) if cfg.layout == "qwen" else aligner_transformers_map(bias, cfg.head_bias)
    fmt = "qwen-safetensors" if cfg.layout == "qwen" else "hf-safetensors"
    source, shapes = f"{directory} ({fmt})", param_shapes(cfg)
    if not in_canonical_names(tensors, wm, shapes):  # a quantised checkpoint is in our names
        check_present(tensors, wm, cfg.backbone, source)
    params, dtypes = apply_weight_map(tensors, tags, wm, shapes, source)
    return Checkpoint(cfg, params, dtypes, directory, fmt)
