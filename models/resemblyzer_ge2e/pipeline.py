"""`VoiceEncoder`: the loaded GE2E network on one backend, embedding utterances and the sliding
windows of speech regions."""

from __future__ import annotations

import os

import numpy as np

from polyasr.models.resemblyzer_ge2e import model
from polyasr.models.resemblyzer_ge2e.checkpoint import find_weights, read_checkpoint
from polyasr.models.resemblyzer_ge2e.config import GE2EConfig
from polyasr.models.resemblyzer_ge2e.weights import map_weights


class VoiceEncoder:
    """The loaded network: `embed_utterance` is resemblyzer's, `embed_windows` the diarization's."""

    name = "resemblyzer"
    target_dbfs = -30.0  # resemblyzer's preprocess_wav raises quiet audio to this RMS: mel power follows gain
    prefers_accelerator = False  # a 160-step LSTM over a few partials: the CPU's steps are faster

    def __init__(self, params: dict[str, np.ndarray], cfg: GE2EConfig, backend):
        self.cfg, self.backend = cfg, backend
        self.params = model.prepare(params, cfg, backend)

    @classmethod
    def load(cls, backend, path: str | os.PathLike | None = None) -> VoiceEncoder:
        """From the installed resemblyzer package's `pretrained.pt`, or `path`, onto `backend` (for MLX
        read without torch)."""
        file = find_weights(path)
        cfg, params = map_weights(read_checkpoint(file, use_torch=backend.name != "mlx"), str(file))
        return cls(params, cfg, backend)

    @property
    def sample_rate(self) -> int:
        return self.cfg.sampling_rate

    def embed_utterance(self, wav: np.ndarray, rate: float = 1.3, min_coverage: float = 0.75) -> np.ndarray:
        with self.backend.no_grad():
            return model.embed_utterance(self.params, self.cfg, self.backend, wav, rate, min_coverage)

    def embed_windows(self, region: np.ndarray, starts: list[int], length: int) -> np.ndarray:
        """Embeddings (len(starts), E) of windows [start, start + length) samples of one speech region.
        A window is embedded as `embed_utterance` embeds a signal of its length, its frames taken from
        the region's mel so the window edges see real neighbours. A window longer than the region (a
        short region) is cut to the region: one partial of the region's own frames, since padding
        it with silence up to a full partial changes the LSTM's final state more than any voice."""
        cfg, B = self.cfg, self.backend
        n = cfg.partials_n_frames
        if len(region) < n * cfg.hop:
            n, offsets = max(1, len(region) // cfg.hop), [0]
        else:
            offsets = model.partial_starts(length, cfg)
        last = starts[-1] // cfg.hop + offsets[-1] + n  # frames the last window's last partial needs
        wav = np.pad(region, (0, max(0, last * cfg.hop - len(region))))
        with B.no_grad():
            mel = model.mel_frames(cfg, B, wav)
            frames = [s // cfg.hop + o for s in starts for o in offsets]
            partials = model.embed_partials(self.params, cfg, B, B.stack([mel[f : f + n] for f in frames]))
        mean = partials.reshape(len(starts), len(offsets), -1).mean(axis=1)
        return mean / np.linalg.norm(mean, axis=1, keepdims=True)
