"""`Qwen3ASRConfig`: the audio encoder's and the Qwen3 decoder's dimensions, from the checkpoint.

Two `config.json` layouts carry the same numbers:

* Qwen's published one (`Qwen/Qwen3-ASR-0.6B`, `-1.7B`; the `qwen-asr` package):
  `{"thinker_config": {"audio_config": ..., "text_config": ..., "audio_token_id": ...}, "support_languages": [...]}`
* transformers' `qwen3_asr` one (the `-hf` repositories):
  `{"audio_config": ..., "text_config": ..., "audio_token_id": ..., "eos_token_id": [...]}`

Field names are upstream's. The decoder's RoPE base is `rope_theta` (Qwen, transformers < 5) or
`rope_parameters.rope_theta` (transformers 5). Qwen's `rope_scaling` declares interleaved MRoPE
sections; an ASR prompt has one position per token on all three axes, so MRoPE is plain RoPE here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from polyasr.errors import CheckpointError


def _pick(cls, d: dict) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in d.items() if k in names}


@dataclass(frozen=True)
class AudioEncoderConfig:
    num_mel_bins: int = 128
    encoder_layers: int = 18
    encoder_attention_heads: int = 14
    encoder_ffn_dim: int = 3584
    d_model: int = 896
    activation_function: str = "gelu"
    n_window: int = 50  # a conv chunk is 2 * n_window mel frames
    n_window_infer: int = 800  # an attention window spans this many mel frames
    output_dim: int = 1024
    downsample_hidden_size: int = 480

    @classmethod
    def from_dict(cls, d: dict) -> AudioEncoderConfig:
        return cls(**_pick(cls, d))

    @property
    def chunk_frames(self) -> int:
        return 2 * self.n_window

    @property
    def chunks_per_window(self) -> int:
        return self.n_window_infer // self.chunk_frames

    @property
    def conv_freq_bins(self) -> int:
        """Mel bins left after the three stride-2 convolutions (128 -> 16)."""
        n = self.num_mel_bins
        for _ in range(3):
            n = (n + 1) // 2
        return n


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 151936
    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    attention_bias: bool = False
    max_position_embeddings: int = 65536
    tie_word_embeddings: bool = True

    @classmethod
    def from_dict(cls, d: dict, tie_default: bool | None = None) -> TextConfig:
        kw = _pick(cls, d)
        params = d.get("rope_parameters") or {}
        scaling = d.get("rope_scaling") or {}
        if "rope_theta" not in kw and "rope_theta" in params:
            kw["rope_theta"] = params["rope_theta"]
        for rope in (params, scaling):
            kind = rope.get("rope_type", rope.get("type", "default"))
            if kind != "default":
                raise CheckpointError(f"Qwen3-ASR text_config: rope_type {kind!r} is not supported (only 'default')")
        if "tie_word_embeddings" not in d and tie_default is not None:
            kw["tie_word_embeddings"] = tie_default
        return cls(**kw)


@dataclass(frozen=True)
class Qwen3ASRConfig:
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    text: TextConfig = field(default_factory=TextConfig)
    audio_token_id: int = 151676
    eos_token_id: tuple[int, ...] = ()
    support_languages: tuple[str, ...] = ()
    layout: str = "qwen"  # "qwen" (thinker_config) | "transformers"

    @classmethod
    def from_dict(cls, d: dict) -> Qwen3ASRConfig:
        """Either layout's `config.json` dict; unknown keys are ignored."""
        layout = "qwen" if "thinker_config" in d else "transformers"
        inner = d["thinker_config"] if layout == "qwen" else d
        if "audio_config" not in inner or "text_config" not in inner:
            raise CheckpointError(
                "Qwen3-ASR config.json has no audio_config/text_config (nor a thinker_config "
                "holding them): not a Qwen3-ASR checkpoint"
            )
        tie = inner.get("tie_word_embeddings", d.get("tie_word_embeddings"))
        eos = inner.get("eos_token_id", d.get("eos_token_id"))
        eos = () if eos is None else tuple(int(e) for e in (eos if isinstance(eos, list | tuple) else [eos]))
        return cls(
            audio=AudioEncoderConfig.from_dict(inner["audio_config"]),
            text=TextConfig.from_dict(inner["text_config"], tie),
            audio_token_id=int(inner.get("audio_token_id", cls.audio_token_id)),
            eos_token_id=eos,
            support_languages=tuple(d.get("support_languages") or ()),
            layout=layout,
        )

    def check(self) -> None:
        """Refuse what the network cannot run, naming the field."""
        a, t = self.audio, self.text
        problems = []
        if a.d_model % a.encoder_attention_heads:
            problems.append(f"audio d_model {a.d_model} not divisible by {a.encoder_attention_heads} heads")
        if a.chunks_per_window < 1:
            problems.append(f"n_window_infer {a.n_window_infer} shorter than one chunk ({a.chunk_frames} frames)")
        if a.activation_function != "gelu" or t.hidden_act != "silu":
            problems.append(f"activations {a.activation_function!r}/{t.hidden_act!r} (expected 'gelu'/'silu')")
        if t.num_attention_heads % t.num_key_value_heads:
            problems.append(f"{t.num_attention_heads} query heads not a multiple of {t.num_key_value_heads} kv heads")
        if a.output_dim != t.hidden_size:
            problems.append(f"audio output_dim {a.output_dim} != text hidden_size {t.hidden_size}")
        if problems:
            raise CheckpointError("Qwen3-ASR config: " + "; ".join(problems))
