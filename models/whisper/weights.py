"""Whisper weight names -> canonical parameters (see model.param_shapes).

One table per format: HF-transformers (safetensors / pytorch_model.bin) and CTranslate2
(`model.bin`, faster-whisper). Fused q/k/v (and cross k/v) are declared beside each table.
Reading the files is `checkpoint.py`'s.
"""

from __future__ import annotations

from polyasr.models.weight_map import WeightMap


def _hf_layer(side: str) -> dict[str, str]:
    src, dst = f"model.{side}.layers.{{}}", f"{side}.blocks.{{}}"
    table = {f"{src}.self_attn.out_proj.{p}": f"{dst}.attn.out.{p}" for p in ("weight", "bias")}
    for p in ("weight", "bias"):
        table[f"{src}.self_attn_layer_norm.{p}"] = f"{dst}.attn_ln.{p}"
        table[f"{src}.final_layer_norm.{p}"] = f"{dst}.mlp_ln.{p}"
        table[f"{src}.fc1.{p}"] = f"{dst}.mlp1.{p}"
        table[f"{src}.fc2.{p}"] = f"{dst}.mlp2.{p}"
        if side == "decoder":
            table[f"{src}.encoder_attn_layer_norm.{p}"] = f"{dst}.cross_attn_ln.{p}"
            table[f"{src}.encoder_attn.q_proj.{p}"] = f"{dst}.cross_attn.q.{p}"
            table[f"{src}.encoder_attn.out_proj.{p}"] = f"{dst}.cross_attn.out.{p}"
    return table


def _hf_fuse(side: str) -> dict[str, tuple]:
    src, dst = f"model.{side}.layers.{{}}", f"{side}.blocks.{{}}"
    fuse = {
        f"{dst}.attn.qkv.weight": tuple(f"{src}.self_attn.{n}_proj.weight" for n in "qkv"),
        f"{dst}.attn.qkv.bias": (f"{src}.self_attn.q_proj.bias", None, f"{src}.self_attn.v_proj.bias"),
    }
    if side == "decoder":
        fuse[f"{dst}.cross_attn.kv.weight"] = tuple(f"{src}.encoder_attn.{n}_proj.weight" for n in "kv")
        fuse[f"{dst}.cross_attn.kv.bias"] = (None, f"{src}.encoder_attn.v_proj.bias")
    return fuse


HF_MAP = WeightMap(
    rename={
        **{f"model.encoder.conv{i}.{p}": f"encoder.conv{i}.{p}" for i in (1, 2) for p in ("weight", "bias")},
        "model.encoder.embed_positions.weight": "encoder.positional_embedding",
        "model.encoder.layer_norm.weight": "encoder.ln_post.weight",
        "model.encoder.layer_norm.bias": "encoder.ln_post.bias",
        "model.decoder.embed_tokens.weight": "decoder.token_embedding.weight",
        "model.decoder.embed_positions.weight": "decoder.positional_embedding",
        "model.decoder.layer_norm.weight": "decoder.ln.weight",
        "model.decoder.layer_norm.bias": "decoder.ln.bias",
        "proj_out.weight": None,  # tied to the token embedding
        **_hf_layer("encoder"),
        **_hf_layer("decoder"),
    },
    fuse={**_hf_fuse("encoder"), **_hf_fuse("decoder")},
)


def _ct2_layer(side: str) -> dict[str, str | None]:
    src, dst = f"{side}/layer_{{}}", f"{side}.blocks.{{}}"
    parts = {
        "self_attention/layer_norm": "attn_ln",
        "self_attention/linear_0": "attn.qkv",
        "self_attention/linear_1": "attn.out",
        "ffn/layer_norm": "mlp_ln",
        "ffn/linear_0": "mlp1",
        "ffn/linear_1": "mlp2",
    }
    if side == "decoder":
        parts.update(
            {
                "attention/layer_norm": "cross_attn_ln",
                "attention/linear_0": "cross_attn.q",
                "attention/linear_1": "cross_attn.kv",
                "attention/linear_2": "cross_attn.out",
            }
        )
    table = {}
    for s, d in parts.items():
        names = ("gamma", "beta") if s.endswith("layer_norm") else ("weight", "bias")
        for n, p in zip(names, ("weight", "bias")):
            table[f"{src}/{s}/{n}"] = f"{dst}.{d}.{p}"
    return table


CT2_MAP = WeightMap(
    rename={
        **{f"encoder/conv{i}/{p}": f"encoder.conv{i}.{p}" for i in (1, 2) for p in ("weight", "bias")},
        "encoder/position_encodings/encodings": "encoder.positional_embedding",
        "encoder/layer_norm/gamma": "encoder.ln_post.weight",
        "encoder/layer_norm/beta": "encoder.ln_post.bias",
        "decoder/embeddings/weight": "decoder.token_embedding.weight",
        "decoder/position_encodings/encodings": "decoder.positional_embedding",
        "decoder/layer_norm/gamma": "decoder.ln.weight",
        "decoder/layer_norm/beta": "decoder.ln.bias",
        # Scalars the spec stores as variables: read into the config, not parameters.
        **{f"{s}/num_heads": None for s in ("encoder", "decoder")},
        **{
            f"decoder/{n}": None
            for n in (
                "activation",
                "alibi",
                "alibi_use_positive_positions",
                "scale_alibi",
                "alignment_heads",
                "alignment_layer",
                "pre_norm",
                "scale_embeddings",
                "start_from_zero_embedding",
                "layernorm_embedding",
            )
        },
        "decoder/projection/weight": None,  # tied to the token embedding (an alias of it)
        **_ct2_layer("encoder"),
        **_ct2_layer("decoder"),
    },
)
