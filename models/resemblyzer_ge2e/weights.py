"""`pretrained.pt`'s `model_state` -> our parameters (its own names: torch.nn.LSTM's and Linear's)."""

from __future__ import annotations

import numpy as np

from polyasr.models.resemblyzer_ge2e.config import GE2EConfig
from polyasr.models.weight_map import WeightMap, apply_weight_map

RESEMBLYZER_MAP = WeightMap(
    rename={
        "lstm.weight_ih_l{}": "lstm.weight_ih_l{}",
        "lstm.weight_hh_l{}": "lstm.weight_hh_l{}",
        "lstm.bias_ih_l{}": "lstm.bias_ih_l{}",
        "lstm.bias_hh_l{}": "lstm.bias_hh_l{}",
        "linear.weight": "linear.weight",
        "linear.bias": "linear.bias",
        # the GE2E loss's scale and offset of the similarity matrix: training only
        "similarity_weight": None,
        "similarity_bias": None,
    }
)


def param_shapes(cfg: GE2EConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter the network reads, with its shape."""
    h, shapes = cfg.model_hidden_size, {}
    for i in range(cfg.model_num_layers):
        c_in = cfg.mel_n_channels if i == 0 else h
        shapes |= {
            f"lstm.weight_ih_l{i}": (4 * h, c_in),
            f"lstm.weight_hh_l{i}": (4 * h, h),
            f"lstm.bias_ih_l{i}": (4 * h,),
            f"lstm.bias_hh_l{i}": (4 * h,),
        }
    shapes["linear.weight"] = (cfg.model_embedding_size, h)
    shapes["linear.bias"] = (cfg.model_embedding_size,)
    return shapes


def map_weights(tensors: dict[str, np.ndarray], source: str) -> tuple[GE2EConfig, dict[str, np.ndarray]]:
    """Checkpoint tensors -> (config from their shapes, fp32 parameters); a missing, unexpected or
    mis-shaped tensor is a WeightsMismatchError naming it."""
    cfg = GE2EConfig.from_shapes({k: tuple(v.shape) for k, v in tensors.items()})
    tags = {k: "float32" for k in tensors}
    params, _ = apply_weight_map(tensors, tags, RESEMBLYZER_MAP, param_shapes(cfg), source)
    return cfg, {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}
