"""A WeSpeaker ResNet state dict -> our parameters (WeSpeaker's own names), BatchNorm folded into
the convolution before it.

One table per layout: WeSpeaker's `avg_model.pt` holds the network's names as they are (and the
training head's `projection.weight`, dropped); pyannote's `pytorch_model.bin` holds them under the
wrapper's `resnet.` attribute.
"""

from __future__ import annotations

import numpy as np

from polyasr.models.weight_map import WeightMap, apply_weight_map
from polyasr.models.wespeaker_resnet.config import WeSpeakerConfig

_BN = ("weight", "bias", "running_mean", "running_var")

WESPEAKER_MAP = WeightMap(
    rename={
        "conv1.weight": "conv1.weight",
        **{f"bn1.{p}": f"bn1.{p}" for p in _BN},
        "layer{}.{}.conv1.weight": "layer{}.{}.conv1.weight",
        **{f"layer{{}}.{{}}.bn1.{p}": f"layer{{}}.{{}}.bn1.{p}" for p in _BN},
        "layer{}.{}.conv2.weight": "layer{}.{}.conv2.weight",
        **{f"layer{{}}.{{}}.bn2.{p}": f"layer{{}}.{{}}.bn2.{p}" for p in _BN},
        # the 1x1 projection where a block changes shape (nn.Sequential(conv, bn))
        "layer{}.{}.shortcut.0.weight": "layer{}.{}.shortcut.0.weight",
        **{f"layer{{}}.{{}}.shortcut.1.{p}": f"layer{{}}.{{}}.shortcut.1.{p}" for p in _BN},
        "seg_1.weight": "seg_1.weight",
        "seg_1.bias": "seg_1.bias",
        # BatchNorm's training step counters, and the margin-softmax head of training
        "bn1.num_batches_tracked": None,
        "layer{}.{}.bn1.num_batches_tracked": None,
        "layer{}.{}.bn2.num_batches_tracked": None,
        "layer{}.{}.shortcut.1.num_batches_tracked": None,
        "projection.weight": None,
    }
)
PYANNOTE_MAP = WeightMap(rename={f"resnet.{k}": v for k, v in WESPEAKER_MAP.rename.items() if k != "projection.weight"})
MAPS = {"pyannote": PYANNOTE_MAP, "wespeaker": WESPEAKER_MAP}
# pyannote's StatsPool takes the std as it is; WeSpeaker's TSTP adds 1e-7 to the variance
POOLING_STD_EPS = {"pyannote": 0.0, "wespeaker": 1e-7}


def blocks(cfg: WeSpeakerConfig) -> list[tuple[str, int, int, int]]:
    """(name, input channels, output channels, stride) of every basic block, in order."""
    out, c_in = [], cfg.m_channels
    for layer, n in enumerate(cfg.num_blocks, start=1):
        c_out = cfg.m_channels * 2 ** (layer - 1)
        for i in range(n):
            out.append((f"layer{layer}.{i}", c_in, c_out, 2 if layer > 1 and i == 0 else 1))
            c_in = c_out
    return out


def has_shortcut_conv(c_in: int, c_out: int, stride: int) -> bool:
    return stride != 1 or c_in != c_out


def param_shapes(cfg: WeSpeakerConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter the network reads, with its shape (before BatchNorm folding)."""
    m = cfg.m_channels
    shapes = {"conv1.weight": (m, 1, 3, 3), **{f"bn1.{p}": (m,) for p in _BN}}
    for name, c_in, c_out, stride in blocks(cfg):
        shapes[f"{name}.conv1.weight"] = (c_out, c_in, 3, 3)
        shapes[f"{name}.conv2.weight"] = (c_out, c_out, 3, 3)
        shapes |= {f"{name}.{bn}.{p}": (c_out,) for bn in ("bn1", "bn2") for p in _BN}
        if has_shortcut_conv(c_in, c_out, stride):
            shapes[f"{name}.shortcut.0.weight"] = (c_out, c_in, 1, 1)
            shapes |= {f"{name}.shortcut.1.{p}": (c_out,) for p in _BN}
    shapes["seg_1.weight"] = (cfg.embed_dim, 2 * cfg.stats_dim)
    shapes["seg_1.bias"] = (cfg.embed_dim,)
    return shapes


def map_weights(
    tensors: dict[str, np.ndarray], layout: str, source: str
) -> tuple[WeSpeakerConfig, dict[str, np.ndarray]]:
    """Checkpoint tensors of `layout` -> (config from their shapes, fp32 parameters with BatchNorm
    folded); a missing, unexpected or mis-shaped tensor is a WeightsMismatchError naming it."""
    prefix = "resnet." if layout == "pyannote" else ""
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    cfg = WeSpeakerConfig.from_shapes(shapes, prefix, pooling_std_eps=POOLING_STD_EPS[layout])
    tags = {k: "float32" for k in tensors}
    params, _ = apply_weight_map(tensors, tags, MAPS[layout], param_shapes(cfg), source)
    return cfg, fold_batch_norms({k: np.asarray(v, dtype=np.float64) for k, v in params.items()}, cfg)


def _fold(w: np.ndarray, bn: dict[str, np.ndarray], eps: float) -> tuple[np.ndarray, np.ndarray]:
    """conv (no bias) then BatchNorm in inference = one conv: w * s per output channel, bias
    beta - mean * s, s = gamma / sqrt(var + eps)."""
    scale = bn["weight"] / np.sqrt(bn["running_var"] + eps)
    return (w * scale[:, None, None, None]).astype(np.float32), (bn["bias"] - bn["running_mean"] * scale).astype(
        np.float32
    )


def fold_batch_norms(params: dict[str, np.ndarray], cfg: WeSpeakerConfig) -> dict[str, np.ndarray]:
    """Mapped parameters -> the network's: `<conv>.w` / `<conv>.b` per convolution (BatchNorm folded,
    float64 arithmetic, float32 out), `seg_1.weight` / `seg_1.bias`."""
    eps = cfg.batch_norm_eps

    def bn(name):
        return {p: params[f"{name}.{p}"] for p in _BN}

    pairs = [("conv1", "conv1", "bn1")]
    for name, c_in, c_out, stride in blocks(cfg):
        pairs += [(f"{name}.conv1", f"{name}.conv1", f"{name}.bn1"), (f"{name}.conv2", f"{name}.conv2", f"{name}.bn2")]
        if has_shortcut_conv(c_in, c_out, stride):
            pairs.append((f"{name}.shortcut", f"{name}.shortcut.0", f"{name}.shortcut.1"))
    out = {}
    for target, conv, norm in pairs:
        out[f"{target}.w"], out[f"{target}.b"] = _fold(params[f"{conv}.weight"], bn(norm), eps)
    out["seg_1.weight"] = params["seg_1.weight"].astype(np.float32)
    out["seg_1.bias"] = params["seg_1.bias"].astype(np.float32)
    return out
