"""Qwen3-ForcedAligner as functions of (params, cfg, B): Qwen3-ASR's network (models/qwen3_asr/model.py:
the same audio encoder, the audio spliced into the prompt, the same Qwen3 decoder) read once over
the whole prompt, and a linear classifier over timestamp classes at the `<timestamp>` slots.

The prompt (Qwen's `Qwen3ForceAlignProcessor.encode_timestamp`) is
`<|audio_start|> <|audio_pad|> x N <|audio_end|> w1 <timestamp> <timestamp> w2 <timestamp> <timestamp> ...`:
the two slots after a word are its start and its end.
"""

from __future__ import annotations

import numpy as np

from polyasr.models.qwen3_asr import model as asr


def param_shapes(cfg):
    """Qwen3-ASR's parameters without its vocabulary head, plus the classifier `score` (classes, hidden)."""
    shapes = asr.param_shapes(cfg.backbone)
    shapes.pop("lm_head.weight", None)
    shapes.linear("score", cfg.classify_num, cfg.text.hidden_size, bias=cfg.head_bias)
    return shapes


def prepare(params, cfg, B) -> dict:
    return asr.prepare_shared(params, param_shapes(cfg), cfg.backbone, B)


def timestamp_logits(params, cfg, B, x, pad, slots: np.ndarray) -> np.ndarray:
    """x (B, L, hidden) prompt embeddings (left-padded by `pad`), slots: flat indices into B * L of the
    `<timestamp>` positions -> their class logits (len(slots), classify_num) as a host float32 array."""
    n, length, hidden = x.shape
    cache = asr.new_cache(cfg.backbone, B, pad, length)
    h = asr.decode(params, cfg.backbone, B, x, cache).reshape(n * length, hidden)[B.asarray(slots)]
    return B.to_numpy(B.linear(h, params["score.weight"], params.get("score.bias")))
