"""`GE2EConfig`: Resemblyzer's voice encoder (its `hparams.py`, resemblyzer 0.1.4).

`pretrained.pt` holds tensors only, so the network's sizes come from their shapes (`from_shapes`);
the frontend and the partial-utterance rules are facts of resemblyzer's code:
- frames: `librosa.feature.melspectrogram(y, sr=16000, n_fft=400, hop_length=160, n_mels=40)`, i.e.
  a periodic Hann window of 400 taps, centred frames with zero padding (librosa's default
  `pad_mode="constant"`), |STFT|^2, slaney mel scale with slaney area normalisation, 0-8 kHz. The
  network reads this mel *power*, not its log.
- partial utterances of 160 frames (1.6 s); `embed_utterance` steps them by round(16000 / rate /
  160) frames (rate 1.3 per second: 77 frames), zero-pads the signal to the last one's end and
  drops that last one when the signal covers less than `min_coverage` (0.75) of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from polyasr.errors import WeightsMismatchError
from polyasr.kernels.mel_tables import MelConfig


@dataclass(frozen=True)
class GE2EConfig:
    sampling_rate: int = 16000
    mel_window_length: int = 25  # ms
    mel_window_step: int = 10  # ms
    mel_n_channels: int = 40
    partials_n_frames: int = 160
    model_hidden_size: int = 256
    model_embedding_size: int = 256
    model_num_layers: int = 3

    @property
    def n_fft(self) -> int:
        return self.sampling_rate * self.mel_window_length // 1000

    @property
    def hop(self) -> int:
        return self.sampling_rate * self.mel_window_step // 1000

    def mel_config(self) -> MelConfig:
        """The frontend as our `MelConfig` (its power part; the centring is done on the host)."""
        return MelConfig(
            sample_rate=self.sampling_rate,
            n_fft=self.n_fft,
            win_length=self.n_fft,
            hop_length=self.hop,
            n_mels=self.mel_n_channels,
            mel_scale="slaney",
            mel_norm="slaney",
            window="hann",
            periodic_window=True,
            power=2.0,
            center=False,
        )

    @classmethod
    def tiny(cls) -> GE2EConfig:
        return cls(mel_n_channels=40, model_hidden_size=16, model_embedding_size=8, model_num_layers=2)

    @classmethod
    def from_shapes(cls, shapes: dict[str, tuple[int, ...]]) -> GE2EConfig:
        """The network's sizes from `pretrained.pt`'s `model_state` tensor shapes."""
        try:
            n_mels = shapes["lstm.weight_ih_l0"][1]
            hidden = shapes["lstm.weight_hh_l0"][1]
            embedding = shapes["linear.weight"][0]
        except (KeyError, IndexError) as e:
            raise WeightsMismatchError(f"not a GE2E voice encoder checkpoint: tensor {e.args[0]!r} is missing") from e
        layers = 0
        while f"lstm.weight_ih_l{layers}" in shapes:
            layers += 1
        return cls(
            mel_n_channels=n_mels, model_hidden_size=hidden, model_embedding_size=embedding, model_num_layers=layers
        )
