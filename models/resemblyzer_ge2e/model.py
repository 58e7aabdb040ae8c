"""The GE2E voice encoder as functions of `(params, cfg, B)`, B a backend (`polyasr.backends`).

wav (N,) 16 kHz -> zero-pad n_fft/2 on both sides (librosa's centring)
    -> mel power fb @ |rfft(frame * hann)|^2                           -> (T, 40), T = 1 + N // 160
partials: (P, 160, 40) frame slices
    -> LSTM x3 (256), the last layer's final hidden state               -> (P, 256)
    -> ReLU(linear)                                                     -> (P, 256)
    -> / L2 norm                                                        -> partial embeddings
utterance embedding = L2-normalised mean of its partials' embeddings.
"""

from __future__ import annotations

import numpy as np

from polyasr.models.resemblyzer_ge2e.config import GE2EConfig

# partials per LSTM batch: bounds the (P, 160, 4H) gate activations on long audio
BATCH = 256


def prepare(params: dict[str, np.ndarray], cfg: GE2EConfig, B) -> dict:
    """Host fp32 parameters -> backend arrays."""
    p = {name: B.param(a) for name, a in params.items() if name != "linear.weight"}
    p["linear.w"] = B.prepare_linear(B.param(params["linear.weight"]))
    return p


def mel_frames(cfg: GE2EConfig, B, wav: np.ndarray):
    """wav (N,) float32 host -> mel power frames (1 + N // hop, n_mels) on the device, centred as librosa
    centres them (zeros outside the signal)."""
    pad = cfg.n_fft // 2
    padded = np.pad(np.asarray(wav, dtype=np.float32), (pad, pad))
    mel = B.mel_power(padded, cfg.mel_config())  # (1, n_mels, T)
    return B.transpose(mel[0], (1, 0))


def partial_starts(n_samples: int, cfg: GE2EConfig, rate: float = 1.3, min_coverage: float = 0.75) -> list[int]:
    """First frames of the partial utterances resemblyzer's `compute_partial_slices` cuts a signal of
    n_samples into (each `partials_n_frames` long; at least one)."""
    hop, n = cfg.hop, cfg.partials_n_frames
    n_frames = -(-(n_samples + 1) // hop)
    step = int(np.round(cfg.sampling_rate / rate / hop))
    if not 0 < step <= n:
        raise ValueError(f"partial rate {rate} per second must give a step of 1..{n} frames")
    starts = list(range(0, max(1, n_frames - n + step + 1), step))
    coverage = (n_samples - starts[-1] * hop) / (n * hop)
    if coverage < min_coverage and len(starts) > 1:
        starts.pop()
    return starts


def embed_partials(p: dict, cfg: GE2EConfig, B, mels) -> np.ndarray:
    """mels (P, partials_n_frames, n_mels) backend array -> (P, embedding) float32 host, L2-normalised."""
    out = []
    for first in range(0, mels.shape[0], BATCH):
        x = mels[first : first + BATCH]
        for i in range(cfg.model_num_layers):
            x, (h, _) = B.lstm(
                x,
                p[f"lstm.weight_ih_l{i}"],
                p[f"lstm.weight_hh_l{i}"],
                p[f"lstm.bias_ih_l{i}"],
                p[f"lstm.bias_hh_l{i}"],
            )
        out.append(B.to_numpy(B.relu(B.linear(h, p["linear.w"], p["linear.bias"]))))
    raw = np.concatenate(out).astype(np.float32)
    return raw / np.linalg.norm(raw, axis=1, keepdims=True)


def embed_utterance(p: dict, cfg: GE2EConfig, B, wav: np.ndarray, rate: float = 1.3, min_coverage: float = 0.75):
    """resemblyzer's `VoiceEncoder.embed_utterance` of a (preprocessed) signal: (embedding,) float32."""
    starts = partial_starts(len(wav), cfg, rate, min_coverage)
    n = cfg.partials_n_frames
    end = (starts[-1] + n) * cfg.hop
    wav = np.pad(wav, (0, max(0, end - len(wav))))
    mel = mel_frames(cfg, B, wav)
    partials = embed_partials(p, cfg, B, B.stack([mel[s : s + n] for s in starts]))
    mean = partials.mean(axis=0)
    return mean / np.linalg.norm(mean)
