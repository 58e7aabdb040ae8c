"""GigaAM state-dict names -> canonical parameters (see model.param_shapes), and the frontend buffers.

Canonical names are upstream's (`GigaAMASR.state_dict()`), so the table is mostly identity;
declared beside it: the q and k projections fused into one matmul (`self_attn.qk`; both
read the same rotated input, v reads the unrotated one), BatchNorm's batch counter dropped,
and the torchaudio frontend's buffers taken out as a `FrontendBuffers`, not parameters.
After mapping, `fold_batch_norm` folds a v2 conv module's BatchNorm into its depthwise conv
(host fp32, once).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from polyasr.errors import CheckpointError
from polyasr.models.gigaam.model import param_shapes
from polyasr.models.weight_map import WeightMap, apply_weight_map, fold_batch_norm, host_float32

_L = "encoder.layers.{}"
_IDENTITY = (
    "encoder.pre_encode.conv.{}.weight",
    "encoder.pre_encode.conv.{}.bias",
    "encoder.pre_encode.out.weight",
    "encoder.pre_encode.out.bias",
    *(
        f"{_L}.{m}.{p}"
        for m in (
            "norm_feed_forward1",
            "norm_self_att",
            "norm_conv",
            "norm_feed_forward2",
            "norm_out",
            "feed_forward1.linear1",
            "feed_forward1.linear2",
            "feed_forward2.linear1",
            "feed_forward2.linear2",
            "self_attn.linear_v",
            "self_attn.linear_out",
            "conv.pointwise_conv1",
            "conv.depthwise_conv",
            "conv.pointwise_conv2",
            "conv.batch_norm",
        )
        for p in ("weight", "bias")
    ),
    f"{_L}.conv.batch_norm.running_mean",
    f"{_L}.conv.batch_norm.running_var",
    "head.decoder_layers.0.weight",
    "head.decoder_layers.0.bias",
)

WINDOW = "preprocessor.featurizer.0.spectrogram.window"  # (win_length,) torchaudio hann
FILTERBANK = "preprocessor.featurizer.0.mel_scale.fb"  # (n_fft // 2 + 1, n_mels) torchaudio layout

GIGAAM_MAP = WeightMap(
    rename={
        **{name: name for name in _IDENTITY},
        f"{_L}.conv.batch_norm.num_batches_tracked": None,  # a training counter
        WINDOW: None,  # frontend buffers: read by `frontend_buffers`
        FILTERBANK: None,
    },
    fuse={
        f"{_L}.self_attn.qk.{p}": (f"{_L}.self_attn.linear_q.{p}", f"{_L}.self_attn.linear_k.{p}")
        for p in ("weight", "bias")
    },
)


@dataclass(frozen=True)
class FrontendBuffers:
    """The checkpoint's own STFT window (n_fft,) and mel filter bank (n_mels, n_fft // 2 + 1),
    fp32 on the host (bf16-rounded where the checkpoint stored bf16)."""

    window: np.ndarray
    filterbank: np.ndarray


def map_weights(tensors: dict[str, np.ndarray], dtypes: dict[str, str], cfg, source: str):
    """Checkpoint tensors (GigaAM's names, as `checkpoint.read_gigaam_checkpoint` returns them)
    -> (canonical params, dtype tags, FrontendBuffers | None).

    Every tensor must be consumed and every parameter of `model.param_shapes(cfg)` filled with
    its shape (WeightsMismatchError names the problems); BatchNorm is folded when present.
    """
    params, tags = apply_weight_map(tensors, dtypes, GIGAAM_MAP, param_shapes(cfg), source)
    if cfg.conv_norm_type == "batch_norm":
        params, tags = fold_batch_norm(params, tags, [f"encoder.layers.{i}.conv" for i in range(cfg.n_layers)])
    return params, tags, frontend_buffers(tensors, dtypes, cfg, source)


def frontend_buffers(tensors, dtypes, cfg, source: str) -> FrontendBuffers | None:
    """The window and filter bank the checkpoint stores, checked against the config; None if absent."""
    if WINDOW not in tensors and FILTERBANK not in tensors:
        return None
    if WINDOW not in tensors or FILTERBANK not in tensors:
        raise CheckpointError(f"{source}: has only one of {WINDOW} and {FILTERBANK}")
    window = host_float32(tensors[WINDOW], dtypes.get(WINDOW))
    fb = host_float32(tensors[FILTERBANK], dtypes.get(FILTERBANK))
    n_freq = cfg.n_fft // 2 + 1
    if window.shape != (cfg.win_length,) or fb.shape != (n_freq, cfg.features):
        raise CheckpointError(
            f"{source}: frontend buffers window {window.shape} / filter bank {fb.shape} do not "
            f"match the config ({cfg.win_length},) / ({n_freq}, {cfg.features})"
        )
    left = (cfg.n_fft - cfg.win_length) // 2  # torch.stft centres a short window inside n_fft
    window = np.pad(window, (left, cfg.n_fft - cfg.win_length - left))
    return FrontendBuffers(np.ascontiguousarray(window), np.ascontiguousarray(fb.T))
