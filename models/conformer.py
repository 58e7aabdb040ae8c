"""The Conformer pieces (Gulati et al. 2020) that GigaAM and Parakeet share, on backend ops.

    x = x + 1/2 FF(LN x);  x = x + MHSA(LN x);  x = x + Conv(LN x);  x = x + 1/2 FF(LN x);  LN x

FF = linear, SiLU, linear. Conv = pointwise (2d) + GLU, padded frames zeroed, depthwise k, norm
(BatchNorm folded into the depthwise conv at load, or a LayerNorm), SiLU, pointwise. The two
families differ in the attention (rotary vs Transformer-XL relative positions), which the caller
passes in, and in the conv module's norm. Parameter names are the upstream ones both checkpoints
use (`norm_feed_forward1`, `feed_forward1.linear1`, `conv.pointwise_conv1`, ..., `norm_out`).
Both stems subsample time by stride-2 convolutions; `stage_lengths` is their length arithmetic.
"""

from __future__ import annotations

import numpy as np

from polyasr.models.layers import ParamShapes, layer_norm, linear


def feed_forward(params, B, x, prefix: str):
    return linear(params, B, B.silu(linear(params, B, x, f"{prefix}.linear1")), f"{prefix}.linear2")


def conv_module(params, B, x, prefix: str, keep, norm=None):
    """x (B, T, d) normalised -> (B, T, d). keep: (B, T) bool valid frames (zeroed past them before
    the depthwise conv), or None; norm: (gamma, beta) of a LayerNorm after the depthwise conv, or
    None when a BatchNorm was folded into it."""
    c = f"{prefix}.conv"
    x = B.glu_dwconv_silu(
        linear(params, B, x, f"{c}.pointwise_conv1"),
        params[f"{c}.depthwise_conv.weight"],
        params[f"{c}.depthwise_conv.bias"],
        keep,
        norm,
    )
    return linear(params, B, x, f"{c}.pointwise_conv2")


def conv_module_shapes(shapes: ParamShapes, prefix: str, d: int, kernel: int, bias: bool, norm_stats: bool) -> None:
    """The conv module's parameters (under `<prefix>.conv`): the norm is named `batch_norm` in both
    families (GigaAM v3's LayerNorm too); `norm_stats` adds BatchNorm's running statistics."""
    c = f"{prefix}.conv"
    shapes.conv1x1(f"{c}.pointwise_conv1", 2 * d, d, bias)
    shapes.depthwise(f"{c}.depthwise_conv", d, kernel, bias)
    norm = ("weight", "bias") + (("running_mean", "running_var") if norm_stats else ())
    shapes.update({f"{c}.batch_norm.{n}": (d,) for n in norm})
    shapes.conv1x1(f"{c}.pointwise_conv2", d, d, bias)


def check_folded(params) -> None:
    """`prepare` takes the conv module with its BatchNorm folded into the depthwise conv."""
    if any(".conv.batch_norm.running_mean" in n for n in params):
        raise ValueError("prepare: fold the conv module's BatchNorm first (weight_map.fold_batch_norm)")


def macaron_block(params, B, x, prefix: str, attend, convolve):
    """One block: x (B, T, d) -> (B, T, d). attend / convolve: (B, T, d) normalised -> (B, T, d)."""
    x = x + 0.5 * feed_forward(
        params, B, layer_norm(params, B, x, f"{prefix}.norm_feed_forward1"), f"{prefix}.feed_forward1"
    )
    x = x + attend(layer_norm(params, B, x, f"{prefix}.norm_self_att"))
    x = x + convolve(layer_norm(params, B, x, f"{prefix}.norm_conv"))
    x = x + 0.5 * feed_forward(
        params, B, layer_norm(params, B, x, f"{prefix}.norm_feed_forward2"), f"{prefix}.feed_forward2"
    )
    return layer_norm(params, B, x, f"{prefix}.norm_out")


def stage_lengths(lengths, kernel: int) -> np.ndarray:
    """Frames after one stride-2 conv with padding (k - 1) // 2: floor((L + 2 * pad - k) / 2) + 1. (B,) -> (B,)."""
    return (np.asarray(lengths, dtype=np.int64) + 2 * ((kernel - 1) // 2) - kernel) // 2 + 1


def subsampled_lengths(lengths, kernel: int, stages: int) -> np.ndarray:
    """Frames after `stages` such convolutions. (B,) -> (B,) int64."""
    out = np.asarray(lengths, dtype=np.int64)
    for _ in range(stages):
        out = stage_lengths(out, kernel)
    return out
