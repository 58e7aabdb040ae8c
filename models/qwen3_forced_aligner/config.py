"""`ForcedAlignerConfig`: Qwen3-ASR's encoder and decoder dimensions plus the timestamp head, from
the checkpoint's own config.

Two `config.json` layouts, as for Qwen3-ASR (models/qwen3_asr/config.py reads the shared part):

* Qwen's published one (`Qwen/Qwen3-ForcedAligner-0.6B`, the `qwen-asr` package):
  `{"timestamp_token_id", "timestamp_segment_time", "support_languages",
  "thinker_config": {"model_type": "qwen3_forced_aligner", "classify_num", "audio_config", "text_config", ...}}`;
  its head `thinker.lm_head` has no bias.
* transformers' `qwen3_asr` one for `Qwen3ASRForTokenClassification` (the `-hf` repository): flat,
  the class count as `num_labels` or `id2label`, `timestamp_token_id`, `token_classification_bias`;
  the milliseconds per class are the processor's (`timestamp_segment_time`, default 80).

A class k at a `<timestamp>` slot means k * timestamp_segment_time milliseconds from the start
of the audio.
"""

from __future__ import annotations

from dataclasses import dataclass

from polyasr.errors import CheckpointError
from polyasr.models.qwen3_asr.config import Qwen3ASRConfig

# The languages Qwen's aligner was trained on (its config's `support_languages`; transformers'
# FORCED_ALIGNER_LANGUAGES), used when a checkpoint does not list them.
ALIGNER_LANGUAGES = (
    "Chinese",
    "English",
    "Cantonese",
    "French",
    "German",
    "Italian",
    "Japanese",
    "Korean",
    "Portuguese",
    "Russian",
    "Spanish",
)


@dataclass(frozen=True)
class ForcedAlignerConfig:
    backbone: Qwen3ASRConfig  # encoder, decoder, audio_token_id, support_languages, layout
    classify_num: int = 5000
    timestamp_token_id: int = 151705
    timestamp_segment_time: float = 80.0  # milliseconds per class
    head_bias: bool = False

    @property
    def audio(self):
        return self.backbone.audio

    @property
    def text(self):
        return self.backbone.text

    @property
    def layout(self) -> str:
        return self.backbone.layout

    @property
    def languages(self) -> tuple[str, ...]:
        return self.backbone.support_languages or ALIGNER_LANGUAGES

    @property
    def max_secs(self) -> float:
        """The latest time a class can name."""
        return (self.classify_num - 1) * self.timestamp_segment_time / 1000

    @classmethod
    def from_dict(cls, d: dict, processor: dict | None = None) -> ForcedAlignerConfig:
        """Either layout's `config.json` dict (+ transformers' `processor_config.json`, for the class time)."""
        backbone = Qwen3ASRConfig.from_dict(d)
        inner = d.get("thinker_config", d)
        if backbone.layout == "qwen":
            classes, bias = inner.get("classify_num"), False
        else:
            classes = d.get("num_labels", len(d.get("id2label") or {}) or None)
            bias = bool(d.get("token_classification_bias", False))
        if not classes:
            raise CheckpointError(
                "config.json has no timestamp classes (thinker_config.classify_num, or num_labels / id2label): "
                "a Qwen3-ASR checkpoint, not a Qwen3-ForcedAligner one"
            )
        ms = d.get("timestamp_segment_time", inner.get("timestamp_segment_time"))
        if ms is None:
            ms = (processor or {}).get("timestamp_segment_time", cls.timestamp_segment_time)
        token = d.get("timestamp_token_id", inner.get("timestamp_token_id", cls.timestamp_token_id))
        cfg = cls(backbone, int(classes), int(token), float(ms), bias)
        if cfg.timestamp_segment_time <= 0:
            raise CheckpointError(f"config.json: timestamp_segment_time {ms} must be > 0 milliseconds")
        return cfg

    def check(self) -> None:
        self.backbone.check()
