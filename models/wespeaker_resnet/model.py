"""The WeSpeaker ResNet as functions of `(params, cfg, B)`, B a backend (`polyasr.backends`).

fbank (N, T, F) host, mean-normalised per window           F = num_mel_bins, T frames
    -> (N, 1, F, T) image: frequency as height, time as width
    -> conv 3x3 + BN + ReLU                                  (N, m, F, T)
    -> basic blocks: ReLU(conv3x3 BN ReLU conv3x3 BN + shortcut), four layers of m, 2m, 4m, 8m
       channels, the first block of layers 2-4 with stride 2   (N, 8m, F/8, T')
    -> statistics pooling: mean and std over T' of the 8m * F/8 channels   (N, 2 * stats_dim)
    -> linear seg_1                                          (N, embed_dim), not normalised
BatchNorm is folded into every convolution at load (`weights.fold_batch_norms`).
"""

from __future__ import annotations

import numpy as np

from polyasr.models.wespeaker_resnet.config import WeSpeakerConfig
from polyasr.models.wespeaker_resnet.weights import blocks, has_shortcut_conv


def prepare(params: dict[str, np.ndarray], cfg: WeSpeakerConfig, B) -> dict:
    """Host fp32 parameters (BatchNorm folded) -> backend arrays."""
    p = {name: B.param(a) for name, a in params.items() if name != "seg_1.weight"}
    p["seg_1.w"] = B.prepare_linear(B.param(params["seg_1.weight"]))
    return p


def _block(p: dict, name: str, x, c_in: int, c_out: int, stride: int, B):
    out = B.relu(B.conv2d(x, p[f"{name}.conv1.w"], p[f"{name}.conv1.b"], stride=stride, padding=1))
    out = B.conv2d(out, p[f"{name}.conv2.w"], p[f"{name}.conv2.b"], stride=1, padding=1)
    if has_shortcut_conv(c_in, c_out, stride):
        x = B.conv2d(x, p[f"{name}.shortcut.w"], p[f"{name}.shortcut.b"], stride=stride, padding=0)
    return B.relu(out + x)


def embed(p: dict, cfg: WeSpeakerConfig, B, feats):
    """feats (N, T, F) backend array, each window mean-normalised -> embeddings (N, embed_dim)
    (backend array, as seg_1 gives them: not length-normalised). T >= 9 so that the last layer keeps
    at least two frames for the standard deviation."""
    n, t, f = feats.shape
    x = B.contiguous(B.transpose(feats, (0, 2, 1))).reshape(n, 1, f, t)
    x = B.relu(B.conv2d(x, p["conv1.w"], p["conv1.b"], stride=1, padding=1))
    for name, c_in, c_out, stride in blocks(cfg):
        x = _block(p, name, x, c_in, c_out, stride, B)
    _, c, h, w = x.shape
    mean, std = B.mean_std(x.reshape(n, c * h, w), correction=1, eps=cfg.pooling_std_eps)
    return B.linear(B.concat([mean, std], axis=-1), p["seg_1.w"], p["seg_1.bias"])


def output_frames(t: int) -> int:
    """Time frames left after the three stride-2 layers (3x3 kernels, padding 1)."""
    for _ in range(3):
        t = (t - 1) // 2 + 1
    return t
