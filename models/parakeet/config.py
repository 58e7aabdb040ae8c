"""`ParakeetConfig`: a Parakeet TDT (or RNN-T) checkpoint's frontend, encoder and transducer sizes.

Field names are NeMo's (`AudioToMelSpectrogramPreprocessor`, `ConformerEncoder`, `RNNTDecoder`,
`RNNTJoint`, the TDT decoding section), read from the checkpoint's own config:

* `.nemo` archives: `model_config.yaml` (`from_nemo`); missing keys take NeMo's constructor
  defaults. `${...}` interpolations left in a saved config are resolved against its root.
* transformers directories: `config.json` (`ParakeetTDTConfig`, its `encoder_config`) and
  `preprocessor_config.json` (`ParakeetFeatureExtractor`) (`from_hf`).

Nothing is hard-coded per model size: v2 (English, 1024-dim, 24 layers) and v3 (25 languages)
differ only in what their configs say.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from polyasr.errors import CheckpointError
from polyasr.kernels.mel_tables import MelConfig

LOG_ZERO_GUARD = 2.0**-24  # NeMo's default log_zero_guard_value ("add"); transformers' LOG_ZERO_GUARD_VALUE


@dataclass(frozen=True)
class ParakeetConfig:
    # preprocessor (AudioToMelSpectrogramPreprocessor)
    sample_rate: int = 16000
    window_size: float = 0.025  # seconds
    window_stride: float = 0.01
    window: str = "hann"
    n_fft: int = 512
    features: int = 128
    preemph: float | None = 0.97
    normalize: str | None = "per_feature"
    mag_power: float = 2.0
    log_zero_guard_value: float = LOG_ZERO_GUARD
    # encoder (ConformerEncoder, FastConformer: dw_striding subsampling, rel_pos attention)
    feat_in: int = 128
    n_layers: int = 24
    d_model: int = 1024
    n_heads: int = 8
    ff_expansion_factor: int = 4
    subsampling_factor: int = 8
    subsampling_conv_channels: int = 256
    subsampling_conv_kernel_size: int = 3
    conv_kernel_size: int = 9
    xscaling: bool = True
    use_bias: bool = True  # the encoder's linears
    conv_bias: bool = True  # the conv module's convs (NeMo: use_bias too; transformers: convolution_bias)
    # transducer: prediction network (LSTM), joint, vocabulary
    pred_hidden: int = 640
    pred_rnn_layers: int = 2
    joint_hidden: int = 640
    # Inference ignores dropout (hence compare=False: same network either way), but NeMo inserts a
    # Dropout module into the joint when it is > 0, which shifts the output layer's name.
    joint_dropout: float = field(default=0.0, compare=False)
    vocab_size: int = 8192  # tokens without the blank; the blank id is vocab_size
    durations: tuple[int, ...] = (0, 1, 2, 3, 4)  # () = plain RNN-T
    max_symbols: int = 10

    def __post_init__(self):
        if self.feat_in != self.features:
            raise CheckpointError(
                f"Parakeet config: encoder feat_in {self.feat_in} != preprocessor features {self.features}"
            )
        if self.d_model % self.n_heads:
            raise CheckpointError(f"Parakeet config: d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.subsampling_factor < 2 or self.subsampling_factor & (self.subsampling_factor - 1):
            raise CheckpointError(f"Parakeet config: subsampling_factor {self.subsampling_factor} is not a power of 2")
        if self.normalize not in ("per_feature", None):
            raise CheckpointError(
                f"Parakeet config: preprocessor normalize={self.normalize!r} is not supported (per_feature or none)"
            )
        if any(d < 0 for d in self.durations) or (self.durations and max(self.durations) < 1):
            raise CheckpointError(f"Parakeet config: TDT durations {list(self.durations)} must be >= 0 with one >= 1")
        if self.max_symbols < 1:
            raise CheckpointError(f"Parakeet config: max_symbols {self.max_symbols} must be >= 1")

    @property
    def blank_id(self) -> int:
        return self.vocab_size

    @property
    def win_length(self) -> int:
        return round(self.window_size * self.sample_rate)

    @property
    def hop_length(self) -> int:
        return round(self.window_stride * self.sample_rate)

    @property
    def frame_secs(self) -> float:
        """Seconds per encoder frame (10 ms hop x 8 = 80 ms)."""
        return self.window_stride * self.subsampling_factor

    @property
    def subsampling_stages(self) -> int:
        return int(math.log2(self.subsampling_factor))

    def mel_config(self) -> MelConfig:
        """NeMo's FilterbankFeatures at inference (dither off): pre-emphasis, zero-padded centred STFT
        with a symmetric window, power spectrum, slaney mel bank, ln(x + 2^-24), per-feature
        normalisation over the valid frames. NeMo counts L // hop valid frames for L samples,
        one fewer than the centred STFT produces: the last frame is dropped."""
        return MelConfig(
            sample_rate=self.sample_rate,
            n_fft=self.n_fft,
            win_length=self.win_length,
            hop_length=self.hop_length,
            n_mels=self.features,
            window=self.window,
            periodic_window=False,
            power=self.mag_power,
            center=True,
            pad_mode="constant",
            preemphasis=self.preemph or None,
            log="ln",
            log_guard=self.log_zero_guard_value,
            log_guard_type="add",
            normalize=self.normalize,
            drop_last_frame=True,
        )

    # ---- readers -------------------------------------------------------------------------------
    @classmethod
    def from_nemo(cls, cfg: dict) -> ParakeetConfig:
        """A `.nemo` archive's `model_config.yaml`, parsed to plain dicts."""
        cfg = resolve_interpolations(cfg)
        pre, enc = cfg.get("preprocessor") or {}, cfg.get("encoder") or {}
        dec, joint = cfg.get("decoder") or {}, cfg.get("joint") or {}
        decoding = cfg.get("decoding") or {}
        _check_supported(pre, enc, dec, joint, decoding)
        d_model = int(enc.get("d_model", 256))
        channels = int(enc.get("subsampling_conv_channels", -1))
        durations = decoding.get("durations") or (cfg.get("model_defaults") or {}).get("tdt_durations") or ()
        vocab = _nemo_vocab_size(cfg, dec, joint)
        extra = int(joint.get("num_extra_outputs", len(durations)) or 0)
        if extra != len(durations):
            raise CheckpointError(f"Parakeet config: joint.num_extra_outputs {extra} != {len(durations)} TDT durations")
        pred, jn = dec.get("prednet") or {}, joint.get("jointnet") or {}
        return cls(
            sample_rate=int(pre.get("sample_rate", 16000)),
            window_size=float(pre.get("window_size", 0.02)),
            window_stride=float(pre.get("window_stride", 0.01)),
            window=str(pre.get("window", "hann")),
            n_fft=int(
                pre.get("n_fft")
                or 2 ** math.ceil(math.log2(float(pre.get("window_size", 0.02)) * int(pre.get("sample_rate", 16000))))
            ),
            features=int(pre.get("features", 64)),
            preemph=_optional_float(pre.get("preemph", 0.97)),
            normalize=pre.get("normalize", "per_feature") or None,
            mag_power=float(pre.get("mag_power", 2.0)),
            log_zero_guard_value=float(pre.get("log_zero_guard_value", LOG_ZERO_GUARD)),
            feat_in=int(enc.get("feat_in", pre.get("features", 64))),
            n_layers=int(enc.get("n_layers", 1)),
            d_model=d_model,
            n_heads=int(enc.get("n_heads", 4)),
            ff_expansion_factor=int(enc.get("ff_expansion_factor", 4)),
            subsampling_factor=int(enc.get("subsampling_factor", 4)),
            subsampling_conv_channels=d_model if channels == -1 else channels,
            subsampling_conv_kernel_size=int(enc.get("subsampling_conv_kernel_size", 3)),
            conv_kernel_size=int(enc.get("conv_kernel_size", 31)),
            xscaling=bool(enc.get("xscaling", True)),
            use_bias=bool(enc.get("use_bias", True)),
            conv_bias=bool(enc.get("use_bias", True)),
            pred_hidden=int(pred.get("pred_hidden", 640)),
            pred_rnn_layers=int(pred.get("pred_rnn_layers", 1)),
            joint_hidden=int(jn.get("joint_hidden", 640)),
            joint_dropout=float(jn.get("dropout") or 0.0),
            vocab_size=vocab,
            durations=tuple(int(d) for d in durations),
            max_symbols=int((decoding.get("greedy") or {}).get("max_symbols", 10) or 10),
        )

    @classmethod
    def from_hf(cls, config: dict, preprocessor: dict | None = None) -> ParakeetConfig:
        """transformers' `config.json` (model_type parakeet_tdt / parakeet_rnnt) and `preprocessor_config.json`."""
        kind = config.get("model_type", "")
        if kind not in ("parakeet_tdt", "parakeet_rnnt"):
            raise CheckpointError(
                f"config.json has model_type {kind!r}; polyasr's Parakeet loads parakeet_tdt "
                "(and parakeet_rnnt) checkpoints"
            )
        enc, pre = config.get("encoder_config") or {}, preprocessor or {}
        if enc.get("hidden_act", "silu") != "silu" or config.get("hidden_act", "relu") != "relu":
            raise CheckpointError("Parakeet config: only SiLU feed-forwards and a ReLU joint are supported")
        d_model, heads = int(enc.get("hidden_size", 1024)), int(enc.get("num_attention_heads", 8))
        ff = int(enc.get("intermediate_size", 4096))
        if ff % d_model:
            raise CheckpointError(f"Parakeet config: intermediate_size {ff} is not a multiple of hidden_size {d_model}")
        if int(enc.get("subsampling_conv_stride", 2)) != 2:
            raise CheckpointError("Parakeet config: subsampling_conv_stride must be 2 (dw_striding)")
        vocab = int(config.get("vocab_size", 8193)) - 1
        blank = int(config.get("blank_token_id", vocab))
        if blank != vocab:
            raise CheckpointError(f"Parakeet config: blank_token_id {blank} is not the last of {vocab + 1} classes")
        sr = int(pre.get("sampling_rate", 16000))
        hidden = int(config.get("decoder_hidden_size", 640))
        return cls(
            sample_rate=sr,
            window_size=int(pre.get("win_length", 400)) / sr,
            window_stride=int(pre.get("hop_length", 160)) / sr,
            n_fft=int(pre.get("n_fft", 512)),
            features=int(pre.get("feature_size", enc.get("num_mel_bins", 80))),
            preemph=_optional_float(pre.get("preemphasis", 0.97)),
            feat_in=int(enc.get("num_mel_bins", 80)),
            n_layers=int(enc.get("num_hidden_layers", 24)),
            d_model=d_model,
            n_heads=heads,
            ff_expansion_factor=ff // d_model,
            subsampling_factor=int(enc.get("subsampling_factor", 8)),
            subsampling_conv_channels=int(enc.get("subsampling_conv_channels", 256)),
            subsampling_conv_kernel_size=int(enc.get("subsampling_conv_kernel_size", 3)),
            conv_kernel_size=int(enc.get("conv_kernel_size", 9)),
            xscaling=bool(enc.get("scale_input", True)),
            use_bias=bool(enc.get("attention_bias", True)),
            conv_bias=bool(enc.get("convolution_bias", True)),
            pred_hidden=hidden,
            pred_rnn_layers=int(config.get("num_decoder_layers", 2)),
            joint_hidden=hidden,  # transformers sizes the joint with decoder_hidden_size
            vocab_size=vocab,
            durations=tuple(int(d) for d in config.get("durations", ())) if kind == "parakeet_tdt" else (),
            max_symbols=int(config.get("max_symbols_per_step", 10)),
        )


def _optional_float(v) -> float | None:
    return None if v is None else float(v)


def _nemo_vocab_size(cfg: dict, dec: dict, joint: dict) -> int:
    """Tokens without the blank: decoder.vocab_size, joint.num_classes and the label list must agree."""
    sizes = {"decoder.vocab_size": dec.get("vocab_size"), "joint.num_classes": joint.get("num_classes")}
    labels = cfg.get("labels") or joint.get("vocabulary")
    if labels:
        sizes["labels"] = len(labels)
    found = {k: int(v) for k, v in sizes.items() if v is not None}
    if not found:
        raise CheckpointError("Parakeet config: no vocabulary size (decoder.vocab_size / joint.num_classes / labels)")
    if len(set(found.values())) > 1:
        raise CheckpointError(f"Parakeet config: vocabulary sizes disagree: {found}")
    return next(iter(found.values()))


def _check_supported(pre, enc, dec, joint, decoding) -> None:
    """Refuse the configurations this implementation does not compute, naming the field."""
    checks = [
        ("encoder.subsampling", enc.get("subsampling", "dw_striding"), ("dw_striding",)),
        ("encoder.self_attention_model", enc.get("self_attention_model", "rel_pos"), ("rel_pos",)),
        ("encoder.conv_norm_type", enc.get("conv_norm_type", "batch_norm"), ("batch_norm",)),
        ("encoder.causal_downsampling", bool(enc.get("causal_downsampling", False)), (False,)),
        ("encoder.untie_biases", bool(enc.get("untie_biases", True)), (True,)),
        ("preprocessor.log", bool(pre.get("log", True)), (True,)),
        ("preprocessor.frame_splicing", int(pre.get("frame_splicing", 1)), (1,)),
        ("preprocessor.exact_pad", bool(pre.get("exact_pad", False)), (False,)),
        ("preprocessor.log_zero_guard_type", pre.get("log_zero_guard_type", "add"), ("add",)),
        ("preprocessor.mel_norm", pre.get("mel_norm", "slaney"), ("slaney",)),
        ("decoder.blank_as_pad", bool(dec.get("blank_as_pad", True)), (True,)),
        # a normalised LSTM or a projected one names and shapes its weights differently
        ("decoder.normalization_mode", dec.get("normalization_mode"), (None,)),
        ("joint.jointnet.activation", (joint.get("jointnet") or {}).get("activation", "relu"), ("relu",)),
        ("decoding.model_type", decoding.get("model_type", "tdt"), ("tdt", "rnnt")),
    ]
    prednet = dec.get("prednet") or {}
    rnn_hidden = int(prednet.get("rnn_hidden_size", -1) or -1)
    if rnn_hidden not in (-1, int(prednet.get("pred_hidden", 640))):
        checks.append(("decoder.prednet.rnn_hidden_size", rnn_hidden, (-1, prednet.get("pred_hidden", 640))))
    context = enc.get("att_context_size", [-1, -1])
    if context is not None and list(context) != [-1, -1]:
        checks.append(("encoder.att_context_size", list(context), ([-1, -1],)))
    for name, value, allowed in checks:
        if value not in allowed:
            raise CheckpointError(
                f"Parakeet config: {name}={value!r} is not supported (supported: {', '.join(map(repr, allowed))})"
            )
    if pre.get("lowfreq", 0) not in (0, 0.0, None) or pre.get("highfreq") not in (None,):
        raise CheckpointError("Parakeet config: preprocessor lowfreq/highfreq other than 0/Nyquist is not supported")


_INTERPOLATION = re.compile(r"^\$\{([^}]+)\}$")


def resolve_interpolations(cfg: dict) -> dict:
    """Replace whole-value `${a.b.c}` references (omegaconf interpolations a saved config may keep)
    with the referenced value from the root; `model.` prefixes are relative to the root too."""

    def lookup(path: str, depth: int):
        node = cfg
        for part in path.removeprefix("model.").split("."):
            if not isinstance(node, dict) or part not in node:
                raise CheckpointError(f"Parakeet config: unresolvable interpolation ${{{path}}}")
            node = node[part]
        return resolve(node, depth + 1)

    def resolve(node, depth: int = 0):
        if depth > 20:
            raise CheckpointError("Parakeet config: interpolations nest too deeply (a cycle?)")
        if isinstance(node, dict):
            return {k: resolve(v, depth) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v, depth) for v in node]
        if isinstance(node, str) and (m := _INTERPOLATION.match(node.strip())):
            return lookup(m.group(1), depth)
        return node

    return resolve(cfg)
