"""`GigaAMConfig`: the network, frontend and vocabulary of a GigaAM checkpoint, from its own config.

A released checkpoint carries a nested (hydra / omegaconf) config with `preprocessor`,
`encoder`, `head` and `decoding` sections; field names here are the upstream argument names
of `FeatureExtractor`, `ConformerEncoder`, `CTCHead` and `CTCGreedyDecoding`, and missing
keys take the upstream constructor defaults (which are v2's: conv2d subsampling, kernel 3,
batch-norm conv module, 400-sample centred STFT). v3 states every v3 value explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass

from polyasr.errors import CheckpointError
from polyasr.kernels.mel_tables import MelConfig

# Which fields each section of the released config sets (`head.feat_in` repeats d_model and must
# not overwrite the encoder's feat_in, the mel bin count).
_SECTIONS = {
    "preprocessor": ("sample_rate", "features", "n_fft", "win_length", "hop_length", "center"),
    "encoder": (
        "feat_in",
        "n_layers",
        "d_model",
        "subsampling",
        "subs_kernel_size",
        "subsampling_factor",
        "ff_expansion_factor",
        "self_attention_model",
        "n_heads",
        "pos_emb_max_len",
        "conv_norm_type",
        "conv_kernel_size",
    ),
    "head": ("num_classes",),
    "decoding": ("vocabulary", "model_path"),
}


@dataclass(frozen=True)
class GigaAMConfig:
    # preprocessor (FeatureExtractor)
    sample_rate: int = 16000
    features: int = 64
    n_fft: int = 400
    win_length: int = 400
    hop_length: int = 160
    center: bool = True
    # encoder (ConformerEncoder)
    feat_in: int = 64
    n_layers: int = 16
    d_model: int = 768
    subsampling: str = "conv2d"  # "conv1d" (v3) | "conv2d" (v2)
    subs_kernel_size: int = 3
    subsampling_factor: int = 4
    ff_expansion_factor: int = 4
    self_attention_model: str = "rotary"
    n_heads: int = 16
    pos_emb_max_len: int = 5000  # also the rotary base upstream
    conv_norm_type: str = "batch_norm"  # "layer_norm" (v3) | "batch_norm" (v2)
    conv_kernel_size: int = 31
    # head (CTCHead)
    num_classes: int = 34
    # decoding (CTCGreedyDecoding): characters, or a SentencePiece model (e2e)
    vocabulary: tuple[str, ...] = ()
    model_path: str | None = None
    model_name: str = "gigaam"

    def __post_init__(self):
        if self.self_attention_model != "rotary":
            raise CheckpointError(
                f"GigaAM self_attention_model {self.self_attention_model!r} is not supported "
                "(v2 and v3 use 'rotary'; v1's rel_pos is not implemented)"
            )
        if self.subsampling not in ("conv1d", "conv2d"):
            raise CheckpointError(f"GigaAM subsampling {self.subsampling!r}: expected conv1d or conv2d")
        if self.conv_norm_type not in ("batch_norm", "layer_norm"):
            raise CheckpointError(f"GigaAM conv_norm_type {self.conv_norm_type!r}: expected batch_norm or layer_norm")
        if self.d_model % self.n_heads or self.subsampling_factor not in (2, 4, 8, 16):
            raise CheckpointError(
                f"GigaAM: d_model {self.d_model} must divide into {self.n_heads} heads and "
                f"subsampling_factor {self.subsampling_factor} be a power of two"
            )

    @classmethod
    def from_dict(cls, cfg: dict) -> GigaAMConfig:
        """Build from the released nested config (plain dicts); unknown keys are ignored.

        Preprocessor defaults follow upstream: hop = sr // 100, win = n_fft = sr // 40, centred.
        """
        for name in ("encoder", "head"):
            if not isinstance(cfg.get(name), dict):
                raise CheckpointError(f"GigaAM config has no {name!r} section (keys: {sorted(cfg)})")
        kw = {}
        for section, names in _SECTIONS.items():
            part = cfg.get(section) or {}
            kw.update({k: part[k] for k in names if k in part})
        pre = cfg.get("preprocessor") or {}
        sr = int(kw.get("sample_rate", 16000))
        kw.setdefault("hop_length", sr // 100)
        kw.setdefault("win_length", sr // 40)
        kw.setdefault("n_fft", sr // 40)
        if "features" not in pre and "feat_in" in kw:
            kw["features"] = kw["feat_in"]
        if kw.get("vocabulary") is not None:
            kw["vocabulary"] = tuple(str(c) for c in kw["vocabulary"])
        else:
            kw.pop("vocabulary", None)
        if "model_name" in cfg:
            kw["model_name"] = str(cfg["model_name"])
        return cls(**kw)

    @classmethod
    def tiny(cls, **overrides) -> GigaAMConfig:
        """A few-hundred-kilobyte v3-shaped network for tests (conv1d stem, LayerNorm conv module)."""
        base = dict(
            features=64,
            feat_in=64,
            n_fft=320,
            win_length=320,
            center=False,
            n_layers=2,
            d_model=64,
            subsampling="conv1d",
            subs_kernel_size=5,
            n_heads=4,
            conv_norm_type="layer_norm",
            conv_kernel_size=5,
            num_classes=34,
            vocabulary=RU_CHARS,
        )
        return cls(**{**base, **overrides})

    @property
    def blank_id(self) -> int:
        """Upstream: the blank is the last class (`len(tokenizer)`)."""
        return self.num_classes - 1

    @property
    def frame_secs(self) -> float:
        """Seconds per encoder frame: hop x subsampling (10 ms x 4 = 40 ms)."""
        return self.hop_length * self.subsampling_factor / self.sample_rate

    def mel_config(self) -> MelConfig:
        """torchaudio.transforms.MelSpectrogram as GigaAM configures it, then ln(clamp(x, 1e-9, 1e9)).

        torchaudio's defaults: periodic hann of win_length taps, power 2, htk mel scale without
        area norm, f_min 0, f_max sr / 2, reflect padding when centred.
        """
        return MelConfig(
            sample_rate=self.sample_rate,
            n_fft=self.n_fft,
            win_length=self.win_length,
            hop_length=self.hop_length,
            n_mels=self.features,
            mel_scale="htk",
            mel_norm=None,
            window="hann",
            periodic_window=True,
            power=2.0,
            center=self.center,
            pad_mode="reflect",
            log="ln",
            log_guard=1e-9,
            log_guard_type="clamp",
            log_clamp_max=1e9,
        )


# A character vocabulary of gigaam-v3-ctc's shape (33 symbols, space first; the blank is class 33):
# space and the 32 letters а..я, for `tiny()` and tests. Real checkpoints bring their own
# (`decoding.vocabulary`), which is what transcription uses.
RU_CHARS = (" ", *"абвгдежзийклмнопрстуфхцчшщъыьэюя")
