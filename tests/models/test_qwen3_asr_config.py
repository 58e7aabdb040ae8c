"""Qwen3-ASR config from both `config.json` layouts, and what it refuses."""

from __future__ import annotations

import pytest

from polyasr.errors import CheckpointError
from polyasr.models.qwen3_asr.config import Qwen3ASRConfig
from polyasr.models.qwen3_asr.model import audio_tokens, param_shapes

# The released 0.6B config.json, abridged to the fields that matter (Qwen's layout).
PUBLISHED_06B = {
    "architectures": ["Qwen3ASRForConditionalGeneration"],
    "model_type": "qwen3_asr",
    "support_languages": ["Chinese", "English", "Russian"],
    "thinker_config": {
        "model_type": "qwen3_asr_thinker",
        "audio_token_id": 151676,
        "audio_start_token_id": 151669,
        "audio_config": {
            "num_mel_bins": 128,
            "encoder_layers": 18,
            "encoder_attention_heads": 14,
            "encoder_ffn_dim": 3584,
            "d_model": 896,
            "n_window": 50,
            "n_window_infer": 800,
            "conv_chunksize": 500,
            "output_dim": 1024,
            "downsample_hidden_size": 480,
            "max_source_positions": 1500,
            "activation_function": "gelu",
        },
        "text_config": {
            "vocab_size": 151936,
            "hidden_size": 1024,
            "intermediate_size": 3072,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "rope_theta": 1000000,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": True,
            "hidden_act": "silu",
            "rope_scaling": {
                "interleaved": True,
                "mrope_interleaved": True,
                "mrope_section": [24, 20, 20],
                "rope_type": "default",
            },
        },
    },
}


def test_published_layout():
    cfg = Qwen3ASRConfig.from_dict(PUBLISHED_06B)
    cfg.check()
    assert cfg.layout == "qwen" and cfg.audio_token_id == 151676 and cfg.support_languages[2] == "Russian"
    assert (cfg.audio.d_model, cfg.audio.encoder_layers, cfg.audio.chunks_per_window, cfg.audio.conv_freq_bins) == (
        896,
        18,
        8,
        16,
    )
    assert (cfg.text.rope_theta, cfg.text.tie_word_embeddings, cfg.text.num_key_value_heads) == (1e6, True, 8)
    assert "lm_head.weight" not in param_shapes(cfg)
    assert param_shapes(cfg)["audio_tower.conv_out.weight"] == (896, 480 * 16)
    # 13 tokens per second-long chunk, 12.5 per second overall
    assert [audio_tokens(f, cfg) for f in (0, 1, 99, 100, 101, 3000)] == [0, 1, 13, 13, 14, 390]


def test_transformers_layout_and_rope_parameters():
    inner = PUBLISHED_06B["thinker_config"]
    text = {k: v for k, v in inner["text_config"].items() if k not in ("rope_theta", "rope_scaling")}
    text.update(rope_parameters={"rope_type": "default", "rope_theta": 5e6}, tie_word_embeddings=False)
    cfg = Qwen3ASRConfig.from_dict(
        {
            "audio_config": inner["audio_config"],
            "text_config": text,
            "audio_token_id": 151676,
            "eos_token_id": [151645, 151643],
        }
    )
    assert cfg.layout == "transformers" and cfg.text.rope_theta == 5e6 and cfg.eos_token_id == (151645, 151643)
    assert param_shapes(cfg)["lm_head.weight"] == (151936, 1024)


def test_unsupported_configs_are_named():
    bad = {
        "audio_config": dict(PUBLISHED_06B["thinker_config"]["audio_config"], n_window_infer=50),
        "text_config": dict(PUBLISHED_06B["thinker_config"]["text_config"], num_key_value_heads=5),
    }
    with pytest.raises(CheckpointError, match=r"n_window_infer 50.*16 query heads not a multiple of 5"):
        Qwen3ASRConfig.from_dict(bad).check()
    yarn = dict(bad["text_config"], rope_scaling={"rope_type": "yarn", "factor": 4.0})
    with pytest.raises(CheckpointError, match="yarn"):
        Qwen3ASRConfig.from_dict({"audio_config": {}, "text_config": yarn})
    with pytest.raises(CheckpointError, match="not a Qwen3-ASR checkpoint"):
        Qwen3ASRConfig.from_dict({"d_model": 512})
