"""Parakeet checkpoint names -> canonical parameters (NeMo's names; see model.param_shapes).

Two tables, one per format:
* `nemo_weight_map(cfg)`: `model_weights.ckpt` inside a `.nemo` archive. Canonical names are NeMo's,
  so it is identity, plus what is dropped on purpose: the preprocessor's window and mel bank (the
  frontend computes both from the config; tests prove them equal to transformers' extractor),
  BatchNorm's batch counter, and a stored relative-position table (recomputed for each length).
  Where NeMo numbers a module's `nn.Sequential` children by what its config switched on, the
  index comes from the archive's config, not from one released file:
  - `joint.joint_net` is [activation, Dropout if jointnet.dropout, Linear] (`RNNTJoint.
    _joint_net_modules`), so the output layer is `joint_net.2` with dropout and `joint_net.1`
    without; the canonical name is `joint.joint_net.2` (model.param_shapes) either way.
  - `encoder.pre_encode.conv` (dw_striding) is [conv, act] + [dw conv, pw conv, act] per further
    stage whatever the config says; only the stage count varies (model.stem_conv_indices).
  - the prediction network's LSTM is `dec_rnn.lstm` for `normalization_mode: null` and no
    `rnn_hidden_size` projection, the only layout config.py accepts.
* HF_MAP: transformers' `ParakeetForTDT` (names from its NeMo conversion script, reversed).
After mapping, the conv modules' BatchNorm is folded into their depthwise convs (host fp32), and
each layer's q, k and v projections are concatenated into one `linear_qkv` (one GEMM instead of
three: at 10 s, 125 frames, a (125 x 1024) @ (1024 x 1024) product leaves the CPU's GEMM far
from its peak, and three of them cost more than one three times as wide).
"""

from __future__ import annotations

import numpy as np

from polyasr.models.parakeet.model import LSTM, param_shapes
from polyasr.models.weight_map import WeightMap, apply_weight_map, fold_batch_norm, host_float32

_L = "encoder.layers.{}"
_ATTN = ("linear_q", "linear_k", "linear_v", "linear_out")
_LAYER_PARTS = (
    *(f"norm_{n}" for n in ("feed_forward1", "self_att", "conv", "feed_forward2", "out")),
    "feed_forward1.linear1",
    "feed_forward1.linear2",
    "feed_forward2.linear1",
    "feed_forward2.linear2",
    *(f"self_attn.{n}" for n in _ATTN),
    "self_attn.linear_pos",
    "conv.pointwise_conv1",
    "conv.depthwise_conv",
    "conv.pointwise_conv2",
)
_BN = ("weight", "bias", "running_mean", "running_var")
_LSTM_PARTS = ("weight_ih_l{}", "weight_hh_l{}", "bias_ih_l{}", "bias_hh_l{}")

_NEMO_RENAME = {
    "encoder.pre_encode.conv.{}.weight": "encoder.pre_encode.conv.{}.weight",
    "encoder.pre_encode.conv.{}.bias": "encoder.pre_encode.conv.{}.bias",
    "encoder.pre_encode.out.weight": "encoder.pre_encode.out.weight",
    "encoder.pre_encode.out.bias": "encoder.pre_encode.out.bias",
    **{f"{_L}.{part}.{p}": f"{_L}.{part}.{p}" for part in _LAYER_PARTS for p in ("weight", "bias")},
    f"{_L}.self_attn.pos_bias_u": f"{_L}.self_attn.pos_bias_u",
    f"{_L}.self_attn.pos_bias_v": f"{_L}.self_attn.pos_bias_v",
    **{f"{_L}.conv.batch_norm.{n}": f"{_L}.conv.batch_norm.{n}" for n in _BN},
    f"{_L}.conv.batch_norm.num_batches_tracked": None,  # a training counter
    "encoder.pos_enc.pe": None,  # the sinusoid table, recomputed for each length
    "preprocessor.featurizer.window": None,  # computed from the config (symmetric hann)
    "preprocessor.featurizer.fb": None,  # computed from the config (slaney mel bank)
    "decoder.prediction.embed.weight": "decoder.prediction.embed.weight",
    **{f"{LSTM}.{p}": f"{LSTM}.{p}" for p in _LSTM_PARTS},
    **{f"joint.{n}.{p}": f"joint.{n}.{p}" for n in ("enc", "pred") for p in ("weight", "bias")},
}


def nemo_joint_out_index(cfg) -> int:
    """Index of the joint's output Linear in NeMo's `joint_net`: after the activation, and after a
    Dropout module that NeMo inserts only when `jointnet.dropout` is non-zero."""
    return 2 if cfg.joint_dropout else 1


def nemo_weight_map(cfg) -> WeightMap:
    """The `.nemo` table for this archive's config (see the module docstring for what varies)."""
    out = f"joint.joint_net.{nemo_joint_out_index(cfg)}"
    return WeightMap(rename={**_NEMO_RENAME, **{f"{out}.{p}": f"joint.joint_net.2.{p}" for p in ("weight", "bias")}})


_HF_ATTN = {
    "linear_q": "q_proj",
    "linear_k": "k_proj",
    "linear_v": "v_proj",
    "linear_out": "o_proj",
    "linear_pos": "relative_k_proj",
}
_HF_LAYER = {
    **{p: p for p in _LAYER_PARTS if not p.startswith("self_attn.")},
    **{f"self_attn.{n}": f"self_attn.{hf}" for n, hf in _HF_ATTN.items()},
}

HF_MAP = WeightMap(
    rename={
        "encoder.subsampling.layers.{}.weight": "encoder.pre_encode.conv.{}.weight",
        "encoder.subsampling.layers.{}.bias": "encoder.pre_encode.conv.{}.bias",
        "encoder.subsampling.linear.weight": "encoder.pre_encode.out.weight",
        "encoder.subsampling.linear.bias": "encoder.pre_encode.out.bias",
        **{f"{_L}.{hf}.{p}": f"{_L}.{ours}.{p}" for ours, hf in _HF_LAYER.items() for p in ("weight", "bias")},
        f"{_L}.self_attn.bias_u": f"{_L}.self_attn.pos_bias_u",
        f"{_L}.self_attn.bias_v": f"{_L}.self_attn.pos_bias_v",
        **{f"{_L}.conv.norm.{n}": f"{_L}.conv.batch_norm.{n}" for n in _BN},
        f"{_L}.conv.norm.num_batches_tracked": None,
        "decoder.embedding.weight": "decoder.prediction.embed.weight",
        **{f"decoder.lstm.{p}": f"{LSTM}.{p}" for p in _LSTM_PARTS},
        "encoder_projector.weight": "joint.enc.weight",
        "encoder_projector.bias": "joint.enc.bias",
        "decoder.decoder_projector.weight": "joint.pred.weight",
        "decoder.decoder_projector.bias": "joint.pred.bias",
        "joint.head.weight": "joint.joint_net.2.weight",
        "joint.head.bias": "joint.joint_net.2.bias",
    }
)


def map_weights(tensors, dtypes, cfg, weight_map: WeightMap, source: str):
    """Checkpoint tensors -> (canonical params with BatchNorm folded, dtype tags).

    Every tensor must be consumed and every parameter of `param_shapes(cfg)` filled with its
    shape; `WeightsMismatchError` names every problem at once.
    """
    params, tags = apply_weight_map(tensors, dtypes, weight_map, param_shapes(cfg), source)
    params, tags = fold_batch_norm(params, tags, [f"encoder.layers.{i}.conv" for i in range(cfg.n_layers)])
    return fuse_qkv(params, tags, cfg)


def fuse_qkv(params: dict, tags: dict, cfg) -> tuple[dict, dict]:
    """`self_attn.linear_{q,k,v}.{weight,bias}` -> `self_attn.linear_qkv.*` (rows q, then k, then v)."""
    params, tags = dict(params), dict(tags)
    for i in range(cfg.n_layers):
        a = f"encoder.layers.{i}.self_attn"
        for p in ("weight", "bias") if cfg.use_bias else ("weight",):
            names = [f"{a}.linear_{n}.{p}" for n in "qkv"]
            kinds = [tags.pop(n, None) for n in names]
            parts = [params.pop(n) for n in names]
            if len(set(kinds)) == 1:  # same storage (raw bf16 bits included): concatenate as stored
                params[f"{a}.linear_qkv.{p}"], tags[f"{a}.linear_qkv.{p}"] = np.concatenate(parts), kinds[0]
            else:
                params[f"{a}.linear_qkv.{p}"] = np.concatenate([host_float32(x, t) for x, t in zip(parts, kinds)])
                tags[f"{a}.linear_qkv.{p}"] = "float32"
    return params, tags
