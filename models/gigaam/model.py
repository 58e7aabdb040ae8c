"""The GigaAM network as plain functions of (params, cfg, B): Conformer encoder + CTC head.

Encoder (upstream `ConformerEncoder`, v2 and v3):
  stem      log-mel (B, F, T) -> strided convs (stride 2, ReLU) x log2(subsampling_factor):
            conv1d over channels = mel bins (v3), or conv2d over (T, F) and a linear over
            (channels x F') per frame (v2); padded frames are zeroed before every stage.
  layers    macaron Conformer: x + 1/2 FF(LN x); + MHSA(LN x); + Conv(LN x); + 1/2 FF(LN x); LN.
            FF = linear, SiLU, linear. MHSA is rotary: the rotation (base = pos_emb_max_len)
            is applied per head to the *normalised input* before the q and k projections,
            v is projected from the unrotated input. Conv = pointwise (2C), GLU, zero padded
            frames, depthwise k, BatchNorm (folded into the depthwise conv at load) or LayerNorm,
            SiLU, pointwise. No final encoder norm: each layer ends with its own.
Head: a 1x1 conv (a linear) to num_classes, log-softmax; the blank is the last class.

params: flat dict of backend arrays under the canonical names of `param_shapes`, as
`prepare` returns them. Layout is channels-last: x (B, T, C). Batches carry valid lengths;
a padded item's valid frames equal the item computed alone (key-padding mask in attention,
masked convolutions).
"""

from __future__ import annotations

import math

import numpy as np

from polyasr.models import layers
from polyasr.models.conformer import (
    check_folded,
    conv_module,
    conv_module_shapes,
    halve_feed_forward_outputs,
    macaron_block,
    stage_lengths,
    subsampled_lengths,
)
from polyasr.models.layers import ParamShapes, linear

_ENC = "encoder"
_NORMS = ("norm_feed_forward1", "norm_self_att", "norm_conv", "norm_feed_forward2", "norm_out")


def n_stages(cfg) -> int:
    return int(math.log2(cfg.subsampling_factor))


def stem_freq_bins(cfg) -> int:
    """conv2d stem: frequency bins left after the strided stages (upstream `calc_output_length(feat_in)`)."""
    return int(subsampled_lengths([cfg.feat_in], cfg.subs_kernel_size, n_stages(cfg))[0])


def param_shapes(cfg) -> ParamShapes:
    """Every parameter with its shape: the contract checkpoints are checked against, and how
    `prepare` lays each weight out (models/layers.py).

    With conv_norm_type batch_norm the BatchNorm statistics are listed too; `weights.fold_batch_norm`
    folds them into the depthwise conv before `prepare`.
    """
    d, k, shapes = cfg.d_model, cfg.subs_kernel_size, ParamShapes()
    c_in = 1 if cfg.subsampling == "conv2d" else cfg.feat_in
    for i in range(n_stages(cfg)):
        kernel = (k, k) if cfg.subsampling == "conv2d" else (k,)
        shapes[f"{_ENC}.pre_encode.conv.{2 * i}.weight"] = (d, c_in, *kernel)
        shapes[f"{_ENC}.pre_encode.conv.{2 * i}.bias"] = (d,)
        c_in = d
    if cfg.subsampling == "conv2d":
        shapes.linear(f"{_ENC}.pre_encode.out", d, d * stem_freq_bins(cfg), many_rows=True)
    ff = d * cfg.ff_expansion_factor
    for i in range(cfg.n_layers):
        p = f"{_ENC}.layers.{i}"
        for n in _NORMS:
            shapes.norm(f"{p}.{n}", d)
        for j in (1, 2):
            shapes.linear(f"{p}.feed_forward{j}.linear1", ff, d, many_rows=True)
            shapes.linear(f"{p}.feed_forward{j}.linear2", d, ff, many_rows=True)
        shapes.linear(f"{p}.self_attn.qk", 2 * d, d, many_rows=True)
        for n in ("linear_v", "linear_out"):
            shapes.linear(f"{p}.self_attn.{n}", d, d, many_rows=True)
        conv_module_shapes(shapes, p, d, cfg.conv_kernel_size, True, cfg.conv_norm_type == "batch_norm")
    shapes.conv1x1("head.decoder_layers.0", cfg.num_classes, d)
    return shapes


def prepare(params, cfg, B) -> dict:
    """Checkpoint parameters -> what the functions below take, once at load time (models/layers.py),
    with the feed-forwards' macaron 1/2 folded in. BatchNorm must be folded."""
    check_folded(params)
    return layers.prepare(halve_feed_forward_outputs(params, cfg.n_layers), param_shapes(cfg), B)


def _stem(params, cfg, B, x, lengths):
    """x (B, T, F) features, lengths (B,) host ints -> (B, T', d_model), (B,) lengths after the stem."""
    conv2d, pad = cfg.subsampling == "conv2d", (cfg.subs_kernel_size - 1) // 2
    ragged = bool((lengths < x.shape[1]).any())
    if conv2d:
        x = x[:, None]  # (B, 1, T, F): time is axis 2
    for i in range(n_stages(cfg)):
        if ragged:
            keep = B.length_mask(lengths, x.shape[2 if conv2d else 1])
            x = B.zero_masked(x, keep[:, None, :, None] if conv2d else keep[:, :, None])
        w, b = params[f"{_ENC}.pre_encode.conv.{2 * i}.weight"], params[f"{_ENC}.pre_encode.conv.{2 * i}.bias"]
        x = B.relu(B.conv2d(x, w, b, 2, pad) if conv2d else B.conv1d(x, w, b, 2, pad))
        lengths = stage_lengths(lengths, cfg.subs_kernel_size)
    if ragged:  # the last stage's padded frames are not read by a conv again, but keep them zero
        keep = B.length_mask(lengths, x.shape[2 if conv2d else 1])
        x = B.zero_masked(x, keep[:, None, :, None] if conv2d else keep[:, :, None])
    if conv2d:  # (B, C, T', F') -> (B, T', C * F') -> linear
        x = linear(params, B, B.merge_heads(x), f"{_ENC}.pre_encode.out")
    return x, lengths


def _self_attention(params, cfg, B, x, p, rope, keep):
    """x (B, T, d) normalised -> (B, T, d). keep: (B, T) bool valid frames, or None."""
    d, h = cfg.d_model, cfg.n_heads
    q, k = B.split(linear(params, B, B.rope(x, *rope), f"{p}.self_attn.qk"), [d, d])
    v = linear(params, B, x, f"{p}.self_attn.linear_v")
    mask = None if keep is None else keep[:, None, None, :]
    a = B.attention(B.split_heads(q, h), B.split_heads(k, h), B.split_heads(v, h), mask=mask)
    return linear(params, B, B.merge_heads(a), f"{p}.self_attn.linear_out")


def _conv_module(params, cfg, B, x, p, keep):
    """x (B, T, d) normalised -> (B, T, d). v3 names its LayerNorm `batch_norm`; a BatchNorm (v2) is folded."""
    c = f"{p}.conv"
    ln = (
        (params[f"{c}.batch_norm.weight"], params[f"{c}.batch_norm.bias"])
        if cfg.conv_norm_type == "layer_norm"
        else None
    )
    return conv_module(params, B, x, p, keep, ln)


def layer(params, cfg, B, x, i: int, rope, keep):
    """One Conformer block: x (B, T, d) -> (B, T, d)."""
    p = f"{_ENC}.layers.{i}"
    return macaron_block(
        params,
        B,
        x,
        p,
        lambda h: _self_attention(params, cfg, B, h, p, rope, keep),
        lambda h: _conv_module(params, cfg, B, h, p, keep),
    )


def encode(params, cfg, B, features, lengths=None):
    """features (B, n_mels, T) log-mel, lengths (B,) valid frames (host ints; None = all T)
    -> encoded (B, T', d_model), encoded lengths (B,) int64 numpy."""
    x = B.transpose(features, (0, 2, 1))
    lengths = np.full(x.shape[0], x.shape[1], np.int64) if lengths is None else np.asarray(lengths, np.int64)
    x, lengths = _stem(params, cfg, B, x, lengths)
    t = x.shape[1]
    keep = B.length_mask(lengths, t) if bool((lengths < t).any()) else None
    rope = B.rope_tables(t, cfg.d_model // cfg.n_heads, float(cfg.pos_emb_max_len))
    for i in range(cfg.n_layers):
        x = layer(params, cfg, B, x, i, rope, keep)
    return x, lengths


def log_probs(params, B, encoded):
    """encoded (B, T, d) -> CTC log-probabilities (B, T, num_classes)."""
    return B.log_softmax(linear(params, B, encoded, "head.decoder_layers.0"))
