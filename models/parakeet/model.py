"""The Parakeet network as plain functions of (params, cfg, B): FastConformer encoder + TDT joint.

Encoder (NeMo `ConformerEncoder`, FastConformer settings):
  stem      log-mel (B, F, T) as an image (B, 1, T, F): conv 3x3 stride 2 + ReLU, then
            [depthwise 3x3 stride 2, pointwise 1x1, ReLU] x (log2(factor) - 1) ("dw_striding", 8x);
            (B, C, T', F') -> (B, T', C * F') -> linear to d_model; x sqrt(d_model) when xscaling.
            Padded frames are zeroed after every stage (transformers does the same; it makes a
            padded batch equal its items computed alone).
  positions sinusoids of the relative distances T'-1 .. -(T'-1) (sin and cos interleaved), (2T'-1, d).
            Each layer's linear_pos of them depends on T' alone: kept once computed (PositionProjections).
  layers    macaron Conformer: x + 1/2 FF(LN x); + RelMHSA(LN x); + Conv(LN x); + 1/2 FF(LN x); LN.
            RelMHSA is Transformer-XL's (Dai et al. 2019, sec. 3.3): scores = (q + u) k^T + rel_shift((q + v) p^T),
            p = linear_pos(positions), u / v = pos_bias_u / pos_bias_v per head, scaled by 1/sqrt(d_head).
            Conv = pointwise (2d) + GLU, padded frames zeroed, depthwise k (BatchNorm folded in at
            load), SiLU, pointwise. FF = linear, SiLU, linear.
Joint (NeMo `RNNTJoint`): enc (d -> J) on every encoder frame, pred (P -> J) on the prediction
network's output, out = joint_net.2(relu(enc + pred)) -> V + 1 token logits (blank last) and
one logit per TDT duration. The prediction network (embedding + LSTM) runs in the decoding loop
(decode.py on a device, `polyasr._decode.tdt_greedy` on the CPU).

params: flat dict of backend arrays under the canonical (NeMo) names of `param_shapes`, as `prepare`
returns them. Layout is channels-last: x (B, T, C).
"""

from __future__ import annotations

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
LSTM = "decoder.prediction.dec_rnn.lstm"


def stem_conv_indices(cfg) -> list[tuple[int, int | None]]:
    """(depthwise-or-first conv index, pointwise index) per stage in `encoder.pre_encode.conv`:
    [(0, None), (2, 3), (5, 6)] for 8x (ReLUs sit at 1, 4, 7)."""
    return [(0, None)] + [(3 * s - 1, 3 * s) for s in range(1, cfg.subsampling_stages)]


def param_shapes(cfg) -> ParamShapes:
    """Every parameter with its shape: the contract checkpoints are checked against (BatchNorm
    statistics included; `weight_map.fold_batch_norm` folds them before `prepare`), and how
    `prepare` lays each weight out (models/layers.py)."""
    d, c, k, h = cfg.d_model, cfg.subsampling_conv_channels, cfg.subsampling_conv_kernel_size, cfg.n_heads
    ff, s = d * cfg.ff_expansion_factor, ParamShapes()

    def linear(prefix, n_out, n_in, bias):  # every encoder layer multiplies whole sequences
        s.linear(prefix, n_out, n_in, bias, many_rows=True)

    pre = f"{_ENC}.pre_encode"
    for first, pw in stem_conv_indices(cfg):
        s[f"{pre}.conv.{first}.weight"], s[f"{pre}.conv.{first}.bias"] = (c, 1, k, k), (c,)
        if pw is not None:
            s[f"{pre}.conv.{pw}.weight"], s[f"{pre}.conv.{pw}.bias"] = (c, c, 1, 1), (c,)
    linear(f"{pre}.out", d, c * int(subsampled_lengths([cfg.feat_in], k, cfg.subsampling_stages)[0]), True)
    for i in range(cfg.n_layers):
        p = f"{_ENC}.layers.{i}"
        for n in _NORMS:
            s[f"{p}.{n}.weight"], s[f"{p}.{n}.bias"] = (d,), (d,)
        for j in (1, 2):
            linear(f"{p}.feed_forward{j}.linear1", ff, d, cfg.use_bias)
            linear(f"{p}.feed_forward{j}.linear2", d, ff, cfg.use_bias)
        for n in ("linear_q", "linear_k", "linear_v", "linear_out"):
            linear(f"{p}.self_attn.{n}", d, d, cfg.use_bias)
        s.kinds[f"{p}.self_attn.linear_qkv.weight"] = "seq_linear"  # what weights.fuse_qkv makes of q, k and v
        linear(f"{p}.self_attn.linear_pos", d, d, False)
        for n in ("pos_bias_u", "pos_bias_v"):
            s[f"{p}.self_attn.{n}"], s.kinds[f"{p}.self_attn.{n}"] = (h, d // h), "per_head"
        conv_module_shapes(s, p, d, cfg.conv_kernel_size, cfg.conv_bias, norm_stats=True)
    pred, joint, classes = cfg.pred_hidden, cfg.joint_hidden, cfg.vocab_size + 1
    s["decoder.prediction.embed.weight"] = (classes, pred)
    for n in range(cfg.pred_rnn_layers):
        s[f"{LSTM}.weight_ih_l{n}"] = s[f"{LSTM}.weight_hh_l{n}"] = (4 * pred, pred)
        s[f"{LSTM}.bias_ih_l{n}"] = s[f"{LSTM}.bias_hh_l{n}"] = (4 * pred,)
    linear("joint.enc", joint, d, True)  # once over the whole encoder output
    s.linear("joint.pred", joint, pred, True)  # these two run per decoding step
    s.linear("joint.joint_net.2", classes + len(cfg.durations), joint, True)
    return s


def prepare(params, cfg, B) -> dict:
    """Encoder parameters (as `weights.map_weights` returns them: BatchNorm folded, q/k/v fused into
    `linear_qkv`) -> what `encode` takes, once at load time (models/layers.py). The prediction
    network and joint are not passed in: the decoding loop takes them as they are. The feed-forwards'
    macaron 1/2 is folded into their second linear. Under `POSITIONS`, the per-layer position
    projections `encode` computes once and keeps."""
    check_folded(params)
    out = layers.prepare(halve_feed_forward_outputs(params, cfg.n_layers), param_shapes(cfg), B)
    out[POSITIONS] = PositionProjections(held_position_frames(cfg))
    return out


# The projected positions `encode` holds (`PositionProjections`), and the input length they are held
# up to: the pipeline's longest chunk (CHUNK_SECS plus overlap) fits.
POSITIONS = "encoder.position_projections"
HELD_POSITION_SECS = 125.0


def held_position_frames(cfg) -> int:
    return int(np.ceil(HELD_POSITION_SECS / cfg.window_stride / cfg.subsampling_factor)) + 1


# The first stem stage's output one piece of the stem's work makes (see _stem): on a backend that
# wants `small_blocks`, under glibc's mmap threshold; elsewhere, a bound on memory alone.
STEM_PIECE_BYTES = 8 << 20
STEM_BYTES = 1 << 28


def stem_edge_frames(cfg) -> int:
    """Output frames at each end of a time slice that differ from the whole input's stem output. A
    stride-2 stage with padding p reads p frames past the slice's ends, zeros there where the whole
    input has audio; a stage whose input is wrong in c edge frames is wrong in ceil((c + p) / 2) at
    the left end and ceil((c + p - 1) / 2) at the right (the slice's length a multiple of 2 per stage)."""
    pad = (cfg.subsampling_conv_kernel_size - 1) // 2
    left = right = 0
    for _ in range(cfg.subsampling_stages):
        left, right = -(-(left + pad) // 2), -(-(right + pad - 1) // 2)
    return max(left, right)


def _stem(params, cfg, B, features, lengths):
    """features (B, T, F), lengths (B,) host ints -> (B, T', d_model), (B,) lengths after the stem.

    The first stage's output, C x T/2 x F/2 floats per item, is the encoder's largest tensor
    (262 MB for 8 x 10 s at C = 256, F = 128). The stem runs in pieces whose first-stage output
    stays under a bound: groups of whole items, or, for a longer item, spans of its time (a
    multiple of the subsampling factor) read with `stem_edge_frames` of context on each side, whose
    outputs are cut off again. Where the backend wants `small_blocks` (torch on the CPU) the bound
    is STEM_PIECE_BYTES: larger blocks are mapped afresh by malloc at every call and their pages
    faulted in one by one, which took most of the stem's time, while pieces reuse the heap's pages
    and stay in cache. Elsewhere it is STEM_BYTES, so peak memory does not grow with the batch or
    the length.
    """
    n, frames, feats = features.shape
    bound = STEM_PIECE_BYTES if B.small_blocks else STEM_BYTES
    unit = 2**cfg.subsampling_stages
    frame_bytes = cfg.subsampling_conv_channels * (feats // 2 + 1) * 2  # first-stage output per input frame
    item_bytes = frame_bytes * frames
    if n * item_bytes <= bound:
        return _stem_slice(params, cfg, B, features, lengths)
    items = max(1, bound // item_bytes)
    span = frames if item_bytes <= bound else max(unit, bound // frame_bytes // unit * unit)
    halo = stem_edge_frames(cfg) * unit
    groups = []
    for i in range(0, n, items):
        group, valid, pieces = features[i : i + items], lengths[i : i + items], []
        for start in range(0, frames, span):
            a, e = max(0, start - halo), min(frames, start + span + halo)
            x, _ = _stem_slice(params, cfg, B, group[:, a:e], np.clip(valid - a, 0, e - a))
            first = (start - a) // unit
            pieces.append(x[:, first : first + span // unit] if start + span < frames else x[:, first:])
        groups.append(pieces[0] if len(pieces) == 1 else B.concat(pieces, axis=1))
    return B.concat(groups), subsampled_lengths(lengths, cfg.subsampling_conv_kernel_size, cfg.subsampling_stages)


def _stem_slice(params, cfg, B, features, lengths):
    pad, pre = (cfg.subsampling_conv_kernel_size - 1) // 2, f"{_ENC}.pre_encode.conv"
    ragged = bool((lengths < features.shape[1]).any())
    x = features[:, None]  # (B, 1, T, F): time is axis 2
    for first, pw in stem_conv_indices(cfg):
        groups = 1 if pw is None else cfg.subsampling_conv_channels
        x = B.conv2d(x, params[f"{pre}.{first}.weight"], params[f"{pre}.{first}.bias"], 2, pad, groups=groups)
        if pw is not None:
            x = B.conv2d(x, params[f"{pre}.{pw}.weight"], params[f"{pre}.{pw}.bias"])
        x = B.relu(x)
        lengths = stage_lengths(lengths, cfg.subsampling_conv_kernel_size)
        if ragged:  # the next stage must read zeros past each item's end, as if the item were alone
            x = B.zero_masked(x, B.length_mask(lengths, x.shape[2])[:, None, :, None])
    return linear(params, B, B.merge_heads(x), f"{_ENC}.pre_encode.out"), lengths


def relative_positions(B, length: int, d_model: int):
    """(2T-1, d) sinusoids of the distances T-1, T-2, ..., -(T-1): sin at even, cos at odd channels."""
    pos = np.arange(length - 1, -length, -1, dtype=np.float32)[:, None]
    inv_freq = 1.0 / (10000.0 ** (np.arange(0, d_model, 2, dtype=np.float32) / d_model))
    angles = pos * inv_freq
    table = np.stack([np.sin(angles), np.cos(angles)], axis=-1).reshape(2 * length - 1, d_model)
    return B.asarray(table)


def project_positions(params, cfg, B, length: int) -> list:
    """Every layer's `linear_pos` of the relative-position sinusoids for `length` frames, split into
    heads: a list of (H, 2T-1, D)."""
    positions = relative_positions(B, length, cfg.d_model)[None]
    return [
        B.split_heads(linear(params, B, positions, f"{_ENC}.layers.{i}.self_attn.linear_pos"), cfg.n_heads)[0]
        for i in range(cfg.n_layers)
    ]


class PositionProjections:
    """`project_positions` held for the longest length seen so far, up to `max_frames`: the
    projections depend on the weights and the length alone, and recomputing them per call is a
    (2T-1, d) x (d, d) product per layer, about 1/15 of a short input's encoder FLOPs. Length T reads
    the middle 2T-1 rows (distances T-1 .. -(T-1)) of the held table. Longer inputs project their
    own table per call, so the memory held stays bounded: n_layers x (2 max_frames - 1) x d floats."""

    ROUND = 64  # frames a held table's length is rounded up to, so slowly growing inputs reuse it

    def __init__(self, max_frames: int):
        self.max_frames = max_frames
        self.held = (0, None)  # (frames, tables): replaced whole, so a concurrent reader sees one pair

    def get(self, params, cfg, B, length: int) -> list:
        if length > self.max_frames:
            return project_positions(params, cfg, B, length)
        frames, tables = self.held
        if length > frames:
            frames = min(self.max_frames, -(-length // self.ROUND) * self.ROUND)
            tables = project_positions(params, cfg, B, frames)
            B.evaluate(*tables)
            self.held = (frames, tables)
        if length == frames:
            return tables
        start = frames - length
        return [t[:, start : start + 2 * length - 1] for t in tables]  # views, strided as the full table


def _self_attention(params, cfg, B, x, p, pos, keep):
    """x (B, T, d) normalised, pos (H, 2T-1, D) projected positions -> (B, T, d). keep: (B, T)
    bool, or None."""
    h, a = cfg.n_heads, f"{p}.self_attn"
    d = cfg.d_model
    q, k, v = (B.split_heads(t, h) for t in B.split(linear(params, B, x, f"{a}.linear_qkv"), [d, d, d]))
    mask = None if keep is None else keep[:, None, None, :]
    out = B.rel_pos_attention(q, k, v, pos, params[f"{a}.pos_bias_u"], params[f"{a}.pos_bias_v"], mask=mask)
    return linear(params, B, B.merge_heads(out), f"{a}.linear_out")


def layer(params, cfg, B, x, i: int, pos, keep):
    """One FastConformer block: x (B, T, d) -> (B, T, d); pos: this layer's projected positions."""
    p = f"{_ENC}.layers.{i}"
    return macaron_block(
        params,
        B,
        x,
        p,
        lambda h: _self_attention(params, cfg, B, h, p, pos, keep),
        lambda h: conv_module(params, B, h, p, keep),
    )


def encode(params, cfg, B, features, lengths=None):
    """features (B, n_mels, T) log-mel, lengths (B,) valid frames (host ints; None = all T)
    -> encoded (B, T', d_model), encoded lengths (B,) int64 numpy."""
    x = B.transpose(features, (0, 2, 1))
    lengths = np.full(x.shape[0], x.shape[1], np.int64) if lengths is None else np.asarray(lengths, np.int64)
    x, lengths = _stem(params, cfg, B, x, lengths)
    if cfg.xscaling:
        x = x * float(np.sqrt(cfg.d_model))
    t = x.shape[1]
    keep = B.length_mask(lengths, t) if bool((lengths < t).any()) else None
    held = params.get(POSITIONS)
    pos = held.get(params, cfg, B, t) if held is not None else project_positions(params, cfg, B, t)
    for i in range(cfg.n_layers):
        x = layer(params, cfg, B, x, i, pos[i], keep)
    return x, lengths


def joint_encoder(params, B, encoded):
    """encoded (B, T, d) -> the joint's encoder projection (B, T, J), computed once for every frame."""
    return linear(params, B, encoded, "joint.enc")
