"""`WeSpeakerEncoder`: the loaded ResNet on one backend, embedding signals and the sliding windows
of speech regions."""

from __future__ import annotations

import os

import numpy as np

from polyasr.models.wespeaker_resnet import features, model
from polyasr.models.wespeaker_resnet.checkpoint import find_checkpoint, read_checkpoint
from polyasr.models.wespeaker_resnet.config import WeSpeakerConfig
from polyasr.models.wespeaker_resnet.weights import map_weights

# windows per network batch: bounds the (N, m, F, T) activations of the first layer
_BATCH = 16
# the fewest frames whose last layer keeps two time steps (an unbiased std needs two)
MIN_FRAMES = 9


class WeSpeakerEncoder:
    """The loaded network: `embed` is pyannote's `WeSpeakerResNet34.forward` of one signal,
    `embed_windows` the diarization's."""

    name = "wespeaker-resnet34"
    target_dbfs = None  # the fbank is mean-normalised per window: a gain only shifts what CMN removes
    prefers_accelerator = True  # convolutions over (frequency, time): a GPU's work

    def __init__(self, params: dict[str, np.ndarray], cfg: WeSpeakerConfig, backend, checkpoint_format: str = ""):
        self.cfg, self.backend, self.checkpoint_format = cfg, backend, checkpoint_format
        self.params = model.prepare(params, cfg, backend)

    @classmethod
    def load(cls, backend, path: str | os.PathLike | None = None) -> WeSpeakerEncoder:
        """From `path` (pyannote's `pytorch_model.bin`, WeSpeaker's `avg_model.pt`, or a directory
        holding one) or the Hugging Face cache, onto `backend` (for MLX read without torch)."""
        file = find_checkpoint(path)
        tensors, layout = read_checkpoint(file, use_torch=backend.name != "mlx")
        cfg, params = map_weights(tensors, layout, str(file))
        return cls(params, cfg, backend, layout)

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    def embed(self, wav: np.ndarray) -> np.ndarray:
        """One signal's embedding (embed_dim,) float32, not normalised: its fbank, mean-normalised
        over the whole signal, through the network."""
        frames = features.normalize(features.fbank(self._long_enough(wav), self.cfg))
        return self._embed_batches([frames])[0]

    def embed_windows(self, region: np.ndarray, starts: list[int], length: int) -> np.ndarray:
        """L2-normalised embeddings (len(starts), E) of windows [start, start + length) samples of one
        speech region (starts on the frame grid). The region's fbank is computed once; a window's
        frames are its slice of it (with snip_edges framing, exactly the frames of the window alone),
        mean-normalised on their own, as WeSpeaker's diarization does (`subseg_cmn`). A window longer
        than the region (a short region) is cut to the region."""
        region = self._long_enough(region)
        fbank = features.fbank(region, self.cfg)
        n = features.frame_count(min(length, len(region)), self.cfg)
        hop = self.cfg.hop
        windows = [features.normalize(fbank[s // hop : s // hop + n]) for s in starts]
        raw = self._embed_batches(windows)
        return raw / np.linalg.norm(raw, axis=1, keepdims=True)

    def embed_regions(self, regions: list[np.ndarray], starts: list[list[int]], length: int) -> np.ndarray:
        """Embeddings (total windows, E), in order, of the windows of each speech region:
        `embed_windows` region by region, so one region's fbank is held at a time."""
        return np.concatenate([self.embed_windows(r, s, length) for r, s in zip(regions, starts, strict=True)])

    def _long_enough(self, wav: np.ndarray) -> np.ndarray:
        """A signal too short for MIN_FRAMES frames repeated until it is long enough (padding with
        silence would put log-floor frames among the speech)."""
        need = self.cfg.win_length + (MIN_FRAMES - 1) * self.cfg.hop
        wav = np.asarray(wav, dtype=np.float32)
        if len(wav) >= need:
            return wav
        if len(wav) == 0:
            raise ValueError("cannot embed an empty signal")
        return np.tile(wav, -(-need // len(wav)))[:need]

    def _embed_batches(self, windows: list[np.ndarray]) -> np.ndarray:
        B, out = self.backend, []
        with B.no_grad():
            for first in range(0, len(windows), _BATCH):
                feats = B.asarray(np.stack(windows[first : first + _BATCH]))
                out.append(B.to_numpy(model.embed(self.params, self.cfg, B, feats)))
        return np.concatenate(out).astype(np.float32)
