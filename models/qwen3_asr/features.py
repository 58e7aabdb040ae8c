"""Qwen3-ASR's frontend: Whisper's log-mel (n_fft 400, hop 160, slaney 128 bins, log10, floor at
max - 8, (x + 4) / 4, last STFT frame dropped), each item computed as if alone.

Qwen's pipeline runs transformers' `WhisperFeatureExtractor` on each piece of audio; a piece of
N samples gives N // 160 frames. A batch here is computed item by item (`log_mel_ref` with
lengths: reflect padding at the item's own end, the max over its own frames), so batching does
not change an item's features; frames past an item's length are zero, which is also what the
encoder's last chunk is padded with upstream (see README: transformers' batched extractor differs).
"""

from __future__ import annotations

import numpy as np

from polyasr.audio import pad_batch
from polyasr.kernels.mel_tables import MelConfig

SAMPLE_RATE = 16000
# Pieces shorter than this are zero-padded to it (Qwen's split_audio_into_chunks, MIN_ASR_INPUT_SECONDS).
MIN_SAMPLES = SAMPLE_RATE // 2


def mel_config(n_mels: int = 128) -> MelConfig:
    return MelConfig.whisper(n_mels)


def pad_short(audio: np.ndarray) -> np.ndarray:
    """Zero-pad a piece shorter than 0.5 s to 0.5 s at its end."""
    return np.pad(audio, (0, MIN_SAMPLES - len(audio))) if len(audio) < MIN_SAMPLES else audio


def log_mel(audios: list[np.ndarray], cfg: MelConfig, B):
    """16 kHz float32 signals -> fp32 log-mel (B, n_mels, T) on backend B (zero past each item), frames (B,)."""
    return B.log_mel(*pad_batch(audios), cfg)
