"""Log-mel windows of a long file, computed one 30 s window at a time (bounded memory).

The reference computes the log-mel of the whole file (padded with 30 s of zeros, centred
STFT with reflect padding, last frame dropped) and normalises it with the maximum over the
WHOLE spectrogram. We reproduce exactly that without holding it: one streaming pass finds the
maximum, then each window's frames are computed from just the samples they cover.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from polyasr.kernels.mel_tables import MelConfig

_SCAN_FRAMES = 30_000  # frames per chunk of the max-finding pass (5 minutes of audio)
_SILENT_LOG = -10.0  # log10 of the 1e-10 floor: the value of frames of pure padding


class WhisperFeatures:
    def __init__(self, audio: np.ndarray, n_mels: int, n_frames: int, B):
        # Frames are cut from explicit sample ranges here, so the reference's "drop the last frame
        # of the whole file" is already accounted for by content_frames: no frame is dropped per window.
        self.cfg = dataclasses.replace(MelConfig.whisper(n_mels), drop_last_frame=False)
        self.audio, self.n_frames, self.B = audio, n_frames, B
        self.hop, self.half = self.cfg.hop_length, self.cfg.n_fft // 2
        self.content_frames = len(audio) // self.hop
        self.log_max = self._scan_max()

    def _signal(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) of reflect-pad(audio ++ 30 s zeros, n_fft/2), built from views."""
        n, half = len(self.audio), self.half
        out = np.zeros(stop - start, dtype=np.float32)
        for lo, hi, src in ((0, half, None), (half, half + n, self.audio)):
            a, b = max(start, lo), min(stop, hi)
            if a >= b:
                continue
            if src is None:  # left reflection: padded[half - i] for i in [0, half)
                idx = half - np.arange(a, b)
                out[a - start : b - start] = np.where(idx < n, self.audio[np.minimum(idx, n - 1)], 0.0)
            else:
                out[a - start : b - start] = src[a - lo : b - lo]
        return out  # everything right of the audio is zero padding (and its reflection is zero too)

    def _power(self, first: int, count: int):
        """Mel power of frames [first, first + count): (1, n_mels, count) on the backend."""
        sig = self._signal(first * self.hop, (first + count - 1) * self.hop + self.cfg.n_fft)
        return self.B.mel_power(sig, self.cfg)

    def _scan_max(self) -> float:
        # Frames past content_frames + 2 see only zero padding; their log value is the floor.
        last = self.content_frames + 3
        peak = _SILENT_LOG
        for first in range(0, last, _SCAN_FRAMES):
            power = self._power(first, min(_SCAN_FRAMES, last - first))
            peak = max(peak, float(np.log10(max(float(self.B.to_numpy(power.max())), 1e-10))))
        return peak

    def window(self, seek: int, size: int, zero_pad: bool = True):
        """Log-mel frames [seek, seek + size), normalised with the file's maximum, then brought to
        `n_frames`: zero-padded in the log domain (how windows are decoded), or, with
        zero_pad=False, continued with the padded spectrogram (how the language is detected)."""
        count = size if zero_pad else self.n_frames
        mel = self.B.whisper_log(self._power(seek, count), self.log_max)
        if zero_pad and size < self.n_frames:
            mel = self.B.pad_last(mel, self.n_frames - size)
        return self.B.cast(mel)
