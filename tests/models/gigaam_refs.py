"""Reference GigaAM networks for the parity tests, built from the `gigaam` PyPI package (0.1.0).

The package is GigaAM v2: conv2d subsampling (kernel 3), rotary attention, BatchNorm conv
module, 400-sample centred STFT. v3's differences are written here as small modules from the
facts of the public repository's v3 code (salute-developers/GigaAM, gigaam/encoder.py and
preprocess.py), swapped into the package model under the same attribute names, so the state
dict has the released v3 key layout:

- `StridingSubsampling` with `subsampling="conv1d"`: Conv1d(feat_in -> d_model, k, stride 2,
  padding (k-1)//2) + ReLU per stage, no output linear; the padded tail is zeroed before the
  first stage and after every conv (the repo's batching fix, #75).
- `ConformerConvolution` with `norm_type="layer_norm"`: a LayerNorm over channels, still named
  `batch_norm`.
- `FeatureExtractor` with `n_fft`, `win_length`, `center` arguments: center=False, and frame
  lengths (L - win_length) // hop + 1.

Everything else (rotary MHSA, feed-forwards, layer order, CTC head, greedy decoding) is the
package's own code, which v3 keeps unchanged.
"""

from __future__ import annotations

import copy
import math

import torch
import torchaudio
from gigaam.model import GigaAMASR
from gigaam.preprocess import SpecScaler
from omegaconf import OmegaConf
from torch import nn

from polyasr.models.gigaam.config import RU_CHARS


def v2_config(n_layers=2, d_model=64, n_heads=4, conv_kernel_size=31, num_classes=34) -> dict:
    """A released-style (v2) nested config for the package's hydra instantiation."""
    return {
        "model_name": "v2_ctc",
        "sample_rate": 16000,
        "preprocessor": {"_target_": "gigaam.preprocess.FeatureExtractor", "sample_rate": 16000, "features": 64},
        "encoder": {
            "_target_": "gigaam.encoder.ConformerEncoder",
            "feat_in": 64,
            "n_layers": n_layers,
            "d_model": d_model,
            "subsampling_factor": 4,
            "ff_expansion_factor": 4,
            "self_attention_model": "rotary",
            "pos_emb_max_len": 5000,
            "n_heads": n_heads,
            "conv_kernel_size": conv_kernel_size,
            "flash_attn": False,
        },
        "head": {"_target_": "gigaam.decoder.CTCHead", "feat_in": d_model, "num_classes": num_classes},
        "decoding": {"_target_": "gigaam.decoding.CTCGreedyDecoding", "vocabulary": list(RU_CHARS)},
    }


def v3_config(n_layers=2, d_model=64, n_heads=4) -> dict:
    """The v3 config as released (`subsampling: conv1d`, kernel 5, layer_norm, 320-sample STFT)."""
    cfg = v2_config(n_layers, d_model, n_heads, conv_kernel_size=5)
    cfg["model_name"] = "v3_ctc"
    cfg["preprocessor"].update(n_fft=320, win_length=320, hop_length=160, center=False)
    cfg["encoder"].update(subsampling="conv1d", subs_kernel_size=5, conv_norm_type="layer_norm")
    return cfg


class V3FeatureExtractor(nn.Module):
    def __init__(self, sample_rate=16000, features=64, n_fft=320, win_length=320, hop_length=160):
        super().__init__()
        self.hop_length, self.win_length = hop_length, win_length
        self.featurizer = nn.Sequential(
            torchaudio.transforms.MelSpectrogram(
                sample_rate=sample_rate,
                n_mels=features,
                win_length=win_length,
                hop_length=hop_length,
                n_fft=n_fft,
                center=False,
            ),
            SpecScaler(),
        )

    def forward(self, x, length):
        return self.featurizer(x), (length - self.win_length).div(self.hop_length, rounding_mode="floor").add(1)


class V3Subsampling(nn.Module):
    def __init__(self, feat_in, d_model, kernel_size=5, factor=4):
        super().__init__()
        self.k, self.pad, self.stages = kernel_size, (kernel_size - 1) // 2, int(math.log2(factor))
        layers, c_in = [], feat_in
        for _ in range(self.stages):
            layers += [nn.Conv1d(c_in, d_model, kernel_size, stride=2, padding=self.pad), nn.ReLU()]
            c_in = d_model
        self.conv = nn.Sequential(*layers)

    def _len(self, lengths, stages):
        lengths = lengths.to(torch.float)
        for _ in range(stages):
            lengths = torch.floor((lengths + 2 * self.pad - self.k) / 2 + 1.0)
        return lengths.to(torch.int)

    @staticmethod
    def _mask(x, lengths):
        return x.masked_fill((torch.arange(x.size(2))[None, :] >= lengths[:, None])[:, None], 0.0)

    def forward(self, x, lengths):
        x, cur = self._mask(x.transpose(1, 2), lengths), lengths
        for module in self.conv:
            x = module(x)
            if isinstance(module, nn.Conv1d):
                cur = self._len(cur, 1)
                x = self._mask(x, cur)
        return x.transpose(1, 2), self._len(lengths, self.stages)


class V3Convolution(nn.Module):
    def __init__(self, d_model, kernel_size):
        super().__init__()
        self.pointwise_conv1 = nn.Conv1d(d_model, 2 * d_model, 1)
        self.depthwise_conv = nn.Conv1d(
            d_model, d_model, kernel_size, padding=(kernel_size - 1) // 2, groups=d_model, bias=True
        )
        self.batch_norm = nn.LayerNorm(d_model)
        self.activation = nn.SiLU()
        self.pointwise_conv2 = nn.Conv1d(d_model, d_model, 1)

    def forward(self, x, pad_mask=None):
        x = nn.functional.glu(self.pointwise_conv1(x.transpose(1, 2)), dim=1)
        if pad_mask is not None:
            x = x.masked_fill(pad_mask.unsqueeze(1), 0.0)
        x = self.batch_norm(self.depthwise_conv(x).transpose(1, 2)).transpose(1, 2)
        return self.pointwise_conv2(self.activation(x)).transpose(1, 2)


def build_reference(cfg: dict, seed: int = 0) -> GigaAMASR:
    """The package's GigaAMASR for `cfg` (v2 or v3 as written by the functions above), random
    weights including norms and BatchNorm statistics, eval mode."""
    torch.manual_seed(seed)
    enc = cfg["encoder"]
    v3 = enc.get("subsampling") == "conv1d"
    base = copy.deepcopy(cfg)
    if v3:  # the package constructors predate these arguments: build v2 modules, then swap
        base["preprocessor"] = {k: base["preprocessor"][k] for k in ("_target_", "sample_rate", "features")}
        for k in ("subsampling", "subs_kernel_size", "conv_norm_type"):
            base["encoder"].pop(k)
    model = GigaAMASR(OmegaConf.create(base))
    if v3:
        pre = cfg["preprocessor"]
        model.preprocessor = V3FeatureExtractor(
            pre["sample_rate"], pre["features"], pre["n_fft"], pre["win_length"], pre["hop_length"]
        )
        model.encoder.pre_encode = V3Subsampling(
            enc["feat_in"], enc["d_model"], enc["subs_kernel_size"], enc["subsampling_factor"]
        )
        for layer in model.encoder.layers:
            layer.conv = V3Convolution(enc["d_model"], enc["conv_kernel_size"])
    _randomize_norms(model)
    return model.eval()


def _randomize_norms(model: nn.Module):
    """Default init leaves norms at 1/0 and BatchNorm at mean 0 / var 1: make every one of them
    informative, so a swapped or dropped tensor shows up in the outputs."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.startswith("preprocessor.") or name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            elif name.endswith("running_mean") or "norm" in name and name.endswith(".bias"):
                t.normal_(0.0, 0.1)
            elif "norm" in name and name.endswith(".weight"):
                t.normal_(1.0, 0.1)
