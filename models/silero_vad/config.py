"""`SileroVADConfig`: the 16 kHz Silero VAD network (v5 / v6 layout).

The shipped `silero_vad_16k.safetensors` holds tensors only, no config, so the sizes come from the
tensors' shapes (`from_shapes`) and the rest are facts of silero's 16 kHz model (its TorchScript
`VADRNNJIT` and `OnnxWrapper`): 512-sample windows, each seen with the 64 samples before it
(zeros before the first), reflection-padded by 64 samples on the right, a 256-point STFT with hop
128 done upstream as a conv with a stored basis (4 frames per window; the basis is a Hann-windowed
DFT, so `model.py` runs it as an FFT), four conv blocks (kernel 3,
padding 1, strides 1, 2, 2, 1, ReLU) that shrink the 4 frames to 1, one LSTM cell whose state
carries from window to window, and ReLU -> 1x1 conv -> sigmoid.
"""

from __future__ import annotations

from dataclasses import dataclass

from polyasr.errors import WeightsMismatchError


@dataclass(frozen=True)
class SileroVADConfig:
    sample_rate: int = 16000
    num_samples: int = 512  # the window each probability is for
    context_size_samples: int = 64  # samples of the previous window prepended to each window
    reflect_pad: int = 64  # right reflection padding of each (context + window) before the STFT
    filter_length: int = 256  # STFT size (the stored basis: cos rows then sin rows)
    hop_length: int = 128
    encoder_channels: tuple[int, ...] = (128, 64, 64, 128)
    encoder_strides: tuple[int, ...] = (1, 2, 2, 1)
    kernel_size: int = 3
    hidden_size: int = 128  # LSTM cell

    @property
    def n_freqs(self) -> int:
        return self.filter_length // 2 + 1

    @property
    def frames_per_window(self) -> int:
        padded = self.context_size_samples + self.num_samples + self.reflect_pad
        return 1 + (padded - self.filter_length) // self.hop_length

    @classmethod
    def from_shapes(cls, shapes: dict[str, tuple[int, ...]]) -> SileroVADConfig:
        """The sizes of a checkpoint from its tensor shapes (names as in `silero_vad_16k.safetensors`)."""
        try:
            basis = shapes["stft_conv.weight"]
            channels = tuple(shapes[f"conv{i}.weight"][0] for i in range(1, 5))
            hidden = shapes["lstm_cell.weight_hh"][1]
        except KeyError as e:
            raise WeightsMismatchError(f"not a Silero VAD checkpoint: tensor {e.args[0]!r} is missing") from e
        return cls(filter_length=basis[-1], encoder_channels=channels, hidden_size=hidden)
