"""`WhisperConfig`: the network's dimensions and the tokens its decoder needs, from the checkpoint.

HF-transformers directories carry them in `config.json` (upstream field names kept).
CTranslate2 directories keep the dimensions inside `model.bin` (tensor shapes and the
`encoder/num_heads`, `decoder/num_heads` scalars) and the decoding extras in `config.json`
(`suppress_ids`, `suppress_ids_begin`, `lang_ids`, `alignment_heads`); `from_ct2` reads both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class WhisperConfig:
    num_mel_bins: int = 80
    d_model: int = 512
    encoder_layers: int = 6
    encoder_attention_heads: int = 8
    decoder_layers: int = 6
    decoder_attention_heads: int = 8
    encoder_ffn_dim: int = 2048
    decoder_ffn_dim: int = 2048
    max_source_positions: int = 1500
    max_target_positions: int = 448
    vocab_size: int = 51865
    # Tokens the decoder must never emit, and those it must not start with (None = not given).
    suppress_tokens: tuple[int, ...] | None = None
    begin_suppress_tokens: tuple[int, ...] | None = None
    # (decoder layer, head) pairs whose cross-attention follows the audio (word timing).
    alignment_heads: tuple[tuple[int, int], ...] = ()
    lang_ids: tuple[int, ...] = field(default=())

    @classmethod
    def from_dict(cls, d: dict) -> WhisperConfig:
        """Build from an HF `config.json` dict; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        for k in ("suppress_tokens", "begin_suppress_tokens", "lang_ids"):
            if kw.get(k) is not None:
                kw[k] = tuple(int(t) for t in kw[k])
        if kw.get("alignment_heads") is not None:
            kw["alignment_heads"] = tuple((int(a), int(b)) for a, b in kw["alignment_heads"])
        else:
            kw.pop("alignment_heads", None)
        return cls(**kw)

    @classmethod
    def from_ct2(cls, shapes: dict[str, tuple], scalars: dict[str, int], ct2_config: dict) -> WhisperConfig:
        """Dimensions from model.bin tensor shapes / scalars, decoding extras from its config.json."""
        n_enc = sum(1 for k in shapes if k.startswith("encoder/layer_") and k.endswith("/ffn/linear_0/weight"))
        n_dec = sum(1 for k in shapes if k.startswith("decoder/layer_") and k.endswith("/ffn/linear_0/weight"))
        vocab, d_model = shapes["decoder/embeddings/weight"]
        heads = ct2_config.get("alignment_heads")
        return cls(
            num_mel_bins=shapes["encoder/conv1/weight"][1],
            d_model=d_model,
            encoder_layers=n_enc,
            encoder_attention_heads=int(scalars["encoder/num_heads"]),
            decoder_layers=n_dec,
            decoder_attention_heads=int(scalars["decoder/num_heads"]),
            encoder_ffn_dim=shapes["encoder/layer_0/ffn/linear_0/weight"][0],
            decoder_ffn_dim=shapes["decoder/layer_0/ffn/linear_0/weight"][0],
            max_source_positions=shapes["encoder/position_encodings/encodings"][0],
            max_target_positions=shapes["decoder/position_encodings/encodings"][0],
            vocab_size=vocab,
            suppress_tokens=tuple(ct2_config["suppress_ids"]) if ct2_config.get("suppress_ids") is not None else None,
            begin_suppress_tokens=(
                tuple(ct2_config["suppress_ids_begin"]) if ct2_config.get("suppress_ids_begin") is not None else None
            ),
            alignment_heads=tuple((int(a), int(b)) for a, b in heads) if heads else (),
            lang_ids=tuple(ct2_config.get("lang_ids") or ()),
        )

    @classmethod
    def tiny(cls, **overrides) -> WhisperConfig:
        """A few-kilobyte network for tests."""
        base = dict(
            num_mel_bins=80,
            d_model=64,
            encoder_layers=2,
            encoder_attention_heads=4,
            decoder_layers=2,
            decoder_attention_heads=4,
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
            max_source_positions=1500,
            max_target_positions=448,
            vocab_size=51865,
        )
        return cls(**{**base, **overrides})

    @property
    def is_multilingual(self) -> bool:
        return self.vocab_size >= 51865

    @property
    def n_audio_frames(self) -> int:
        """Mel frames in one window: the encoder halves them once (conv2 stride 2)."""
        return 2 * self.max_source_positions
