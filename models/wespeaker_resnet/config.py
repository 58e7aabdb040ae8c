"""`WeSpeakerConfig`: the ResNet speaker embedding as pyannote.audio wraps it (pyannote.audio 4.0.7,
`models/embedding/wespeaker/__init__.py` and `resnet.py`; WeSpeaker's `wespeaker/models/resnet.py`).

The checkpoints hold tensors only, so the network's sizes come from their shapes (`from_shapes`);
the frontend is a fact of the wrapper's code, `WeSpeakerResNet34`'s defaults handed to
`torchaudio.compliance.kaldi.fbank`:
- the waveform scaled by 2^15 (16-bit sample units, as Kaldi reads wav files);
- frames of 25 ms every 10 ms, only frames that fit (`snip_edges`), each frame's mean removed,
  pre-emphasis 0.97 (the first sample repeated before the frame), a symmetric Hamming window
  (0.54 - 0.46 cos), zero-padded to 512 for the FFT (`round_to_power_of_two`); no dither at
  inference; no energy coefficient (`use_energy=False`, so the energy floor plays no part);
- power spectrum -> 80 triangular filters equally spaced on Kaldi's mel scale 1127 ln(1 + f/700)
  from 20 Hz to Nyquist (triangles in mel, not in Hz) -> ln(max(., float32 eps));
- mean normalisation over the frames of the input (`compute_fbank` with no centering span): each
  embedding window is normalised on its own frames.

Network: conv 3x3 (1 -> m) + BN + ReLU, four layers of basic blocks with m, 2m, 4m, 8m channels,
the last three starting with stride 2 (a 1x1 conv + BN shortcut where the shape changes), then
statistics pooling over time of the (8m x feat_dim/8) channels and one linear layer (`seg_1`).
pyannote's pooling is its `StatsPool` (unbiased std, nothing added); WeSpeaker's own `TSTP` adds
1e-7 to the variance, which `pooling_std_eps` carries for its checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

from polyasr.errors import WeightsMismatchError

WINDOW_TYPES = ("hamming", "hanning", "povey", "rectangular")


@dataclass(frozen=True)
class WeSpeakerConfig:
    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_length: int = 25  # ms
    frame_shift: int = 10  # ms
    window_type: str = "hamming"
    preemphasis_coefficient: float = 0.97
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0: an offset from Nyquist
    m_channels: int = 32
    num_blocks: tuple[int, ...] = (3, 4, 6, 3)
    embed_dim: int = 256
    batch_norm_eps: float = 1e-5  # torch.nn.BatchNorm2d's default, folded into the convolutions at load
    pooling_std_eps: float = 0.0

    def __post_init__(self):
        if self.window_type not in WINDOW_TYPES:
            raise ValueError(f"WeSpeakerConfig: window_type {self.window_type!r}, expected one of {WINDOW_TYPES}")

    @property
    def win_length(self) -> int:
        return self.sample_rate * self.frame_length // 1000

    @property
    def hop(self) -> int:
        return self.sample_rate * self.frame_shift // 1000

    @property
    def n_fft(self) -> int:
        return 1 << (self.win_length - 1).bit_length()  # the next power of two

    @property
    def stats_dim(self) -> int:
        """Channels pooled: 8m channels x the frequency bins left after three stride-2 layers."""
        return self.num_mel_bins // 8 * self.m_channels * 8

    @classmethod
    def tiny(cls) -> WeSpeakerConfig:
        return cls(m_channels=4, num_blocks=(2, 1, 1, 1), embed_dim=8)

    @classmethod
    def from_shapes(
        cls, shapes: dict[str, tuple[int, ...]], prefix: str = "", pooling_std_eps: float = 0.0
    ) -> WeSpeakerConfig:
        """The network's sizes from the state dict's shapes (its names: WeSpeaker's under `prefix`)."""
        try:
            m = shapes[f"{prefix}conv1.weight"][0]
            embed, pooled = shapes[f"{prefix}seg_1.weight"]
        except (KeyError, ValueError) as e:
            name = e.args[0] if isinstance(e, KeyError) else f"{prefix}seg_1.weight"
            raise WeightsMismatchError(f"not a WeSpeaker ResNet checkpoint: tensor {name!r} is missing") from e
        blocks = []
        for layer in range(1, 5):
            n = 0
            while f"{prefix}layer{layer}.{n}.conv1.weight" in shapes:
                n += 1
            blocks.append(n)
        if not all(blocks):
            missing = f"{prefix}layer{blocks.index(0) + 1}.0.conv1.weight"
            raise WeightsMismatchError(f"not a WeSpeaker ResNet checkpoint: tensor {missing!r} is missing")
        # seg_1 reads mean and std of 8m channels x (num_mel_bins / 8) bins
        if pooled % (2 * 8 * m):
            raise WeightsMismatchError(
                f"tensor '{prefix}seg_1.weight' has {pooled} inputs, not a multiple of 2 x 8 x {m} pooled channels"
            )
        return cls(
            num_mel_bins=pooled // (2 * m), m_channels=m, num_blocks=tuple(blocks), embed_dim=embed,
            pooling_std_eps=pooling_std_eps,
        )  # fmt: skip
