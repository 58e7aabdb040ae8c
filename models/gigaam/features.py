"""GigaAM's log-mel features: `kernels.mel` with the checkpoint's own window and filter bank.

Released checkpoints store torchaudio's window and mel bank as buffers (v3: rounded to bf16),
and the reference computes its features with those, not with freshly computed ones. The
MelConfig extractor computes both from the config, so when the buffers are present this
module runs the same framing (`kernels.mel`'s, incl. centring and per-item lengths) with the
given window and bank; without them it is `log_mel_ref` as is. Torch only, like `kernels.mel`.
"""

from __future__ import annotations

import numpy as np
import torch

from polyasr.kernels.mel import MelConfig, _frames, log_mel_ref, num_frames


def log_mel(audio: torch.Tensor, cfg: MelConfig, lengths=None, buffers=None) -> tuple[torch.Tensor, torch.Tensor]:
    """audio (B, N) or (N,) float32 -> features (B, n_mels, T) fp32, frame lengths (B,) int64.

    cfg: `GigaAMConfig.mel_config()` (ln of the power mel clamped to [1e-9, 1e9]).
    buffers: `weights.FrontendBuffers` or None. Frames past an item's length are zero.
    """
    if buffers is None:
        return log_mel_ref(audio, cfg, lengths)
    audio = audio[None] if audio.ndim == 1 else audio
    frames = _frames(audio, cfg, None, lengths)  # (B, T, n_fft), lengths checked there
    window = torch.from_numpy(np.asarray(buffers.window, np.float32)).to(frames.device)
    fb = torch.from_numpy(np.asarray(buffers.filterbank, np.float32)).to(frames.device)  # (n_mels, F)
    spec = torch.fft.rfft(frames * window, n=cfg.n_fft)
    mel = (spec.real.square() + spec.imag.square()) @ fb.T  # (B, T, n_mels)
    feats = mel.clamp(cfg.log_guard, cfg.log_clamp_max).log().transpose(1, 2).contiguous()
    full = torch.full((audio.shape[0],), audio.shape[1], dtype=torch.int64)
    frame_lengths = num_frames(full if lengths is None else torch.as_tensor(lengths, dtype=torch.int64), cfg)
    valid = torch.arange(feats.shape[-1])[None, :] < frame_lengths[:, None]
    return feats.masked_fill(~valid[:, None, :].to(feats.device), 0.0), frame_lengths
