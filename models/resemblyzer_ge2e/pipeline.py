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
        """Embeddings (len(starts), E) of windows [start, start + length) samples of one speech region:
        `embed_regions` of that one region."""
        return self.embed_regions([region], [starts], length)

    def embed_regions(self, regions: list[np.ndarray], starts: list[list[int]], length: int) -> np.ndarray:
        """Embeddings (total windows, E), in order, of the windows [s, s + length) samples, s in
        starts[i], of each speech region regions[i]. A window is embedded as `embed_utterance` embeds a
        signal of its length, its frames taken from its region's mel so the window edges see real
        neighbours. A window longer than its region (a short region) is cut to the region: one partial
        of the region's own frames, since padding it with silence up to a full partial changes the
        LSTM's final state more than any voice.

        Partials of equal frame count, across regions, share LSTM batches of up to model.BATCH; a
        region's mel lives only until its partials are embedded, so memory is bounded by one batch
        whatever the number of regions."""
        cfg, B = self.cfg, self.backend
        window_of: list[np.ndarray] = []  # per batch: the window index of each partial
        out: list[np.ndarray] = []  # per batch: the partials' embeddings
        pending: dict[int, tuple[list, list[int]]] = {}  # frame count -> (mel slices, window indices)
        first_window = 0
        with B.no_grad():
            for region, region_starts in zip(regions, starts):
                n, frames, windows = self._partials(region, region_starts, length, first_window)
                first_window += len(region_starts)
                mel = model.mel_frames(cfg, B, self._padded(region, frames[-1] + n))
                slices, owners = pending.setdefault(n, ([], []))
                for f, w in zip(frames, windows):
                    slices.append(mel[f : f + n])
                    owners.append(w)
                    if len(slices) == model.BATCH:
                        out.append(model.embed_partials(self.params, cfg, B, B.stack(slices)))
                        window_of.append(np.array(owners))
                        slices.clear(), owners.clear()
            for slices, owners in pending.values():
                if slices:
                    out.append(model.embed_partials(self.params, cfg, B, B.stack(slices)))
                    window_of.append(np.array(owners))
        mean = np.zeros((first_window, out[0].shape[1]), dtype=np.float32)
        np.add.at(mean, np.concatenate(window_of), np.concatenate(out))
        return mean / np.linalg.norm(mean, axis=1, keepdims=True)

    def _partials(self, region: np.ndarray, starts: list[int], length: int, first_window: int):
        """(frames per partial, first frame of each partial, its window's index) of one region's windows."""
        cfg = self.cfg
        n = cfg.partials_n_frames
        if len(region) < n * cfg.hop:
            n, offsets = max(1, len(region) // cfg.hop), [0]
        else:
            offsets = model.partial_starts(length, cfg)
        frames = [s // cfg.hop + o for s in starts for o in offsets]
        windows = [first_window + i for i in range(len(starts)) for _ in offsets]
        return n, frames, windows

    def _padded(self, region: np.ndarray, frames: int) -> np.ndarray:
        """The region zero-padded to cover `frames` frames (the last window's last partial may run past it)."""
        return np.pad(region, (0, max(0, frames * self.cfg.hop - len(region))))
