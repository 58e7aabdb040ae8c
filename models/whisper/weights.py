"""Whisper checkpoint formats -> canonical parameters (see model.param_shapes).

One table per format: HF-transformers (safetensors / pytorch_model.bin) and CTranslate2
(`model.bin`, faster-whisper). Fused q/k/v (and cross k/v) are declared beside each table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polyasr.errors import CheckpointError
from polyasr.models.checkpoint_io import read_config, read_safetensors_dir, read_torch_weights
from polyasr.models.weight_map import WeightMap, apply_weight_map
from polyasr.models.whisper.config import WhisperConfig
from polyasr.models.whisper.ct2_format import read_ct2_model
from polyasr.models.whisper.model import param_shapes


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


@dataclass
class WhisperCheckpoint:
    cfg: WhisperConfig
    params: dict[str, np.ndarray]  # host arrays (memory-mapped where the format allows)
    dtypes: dict[str, str]
    tokenizer_file: Path
    format: str


def detect_format(directory: Path) -> str:
    if (directory / "model.bin").is_file():
        return "ctranslate2"
    if (directory / "model.safetensors").is_file() or (directory / "model.safetensors.index.json").is_file():
        return "hf-safetensors"
    if (directory / "pytorch_model.bin").is_file():
        return "hf-pytorch-bin"
    raise CheckpointError(
        f"{directory}: no Whisper checkpoint here (expected model.safetensors, "
        "pytorch_model.bin or a CTranslate2 model.bin beside config.json and tokenizer.json)"
    )


def load_checkpoint(path: str | Path) -> WhisperCheckpoint:
    """Read a Whisper checkpoint directory of any supported format (a file path means its directory)."""
    directory = Path(path)
    directory = directory.parent if directory.is_file() else directory
    fmt = detect_format(directory)
    config_file = directory / "config.json"
    tokenizer_file = directory / "tokenizer.json"
    for f in (config_file, tokenizer_file):
        if not f.is_file():
            raise CheckpointError(f"{directory}: missing {f.name}, which a Whisper checkpoint directory must have")
    config = read_config(config_file)
    if fmt == "ctranslate2":
        cfg, tensors, dtypes, table = _read_ct2(directory / "model.bin", config)
    else:
        if config.get("model_type") not in (None, "whisper"):
            raise CheckpointError(
                f"{config_file}: model_type is {config.get('model_type')!r}, not a Whisper checkpoint"
            )
        cfg = WhisperConfig.from_dict(_with_generation_config(directory, config))
        if fmt == "hf-safetensors":
            tensors, dtypes = read_safetensors_dir(directory)
        else:
            tensors, dtypes = read_torch_weights(directory / "pytorch_model.bin")
        table = HF_MAP
    params, tags = apply_weight_map(tensors, dtypes, table, param_shapes(cfg), f"{directory} ({fmt})")
    return WhisperCheckpoint(cfg, params, tags, tokenizer_file, fmt)


def _with_generation_config(directory: Path, config: dict) -> dict:
    """HF keeps suppress tokens / alignment heads in generation_config.json on newer exports."""
    gen = read_config(directory / "generation_config.json", optional=True)
    if not gen:
        return config
    merged = dict(config)
    for k in ("suppress_tokens", "begin_suppress_tokens", "alignment_heads"):
        if gen.get(k) is not None:
            merged[k] = gen[k]
    if gen.get("lang_to_id"):
        merged["lang_ids"] = sorted(gen["lang_to_id"].values())
    return merged


def _read_ct2(model_bin: Path, config: dict):
    m = read_ct2_model(model_bin)
    if m.spec_name != "WhisperSpec":
        raise CheckpointError(f"{model_bin}: CTranslate2 model of type {m.spec_name}, not WhisperSpec")
    # CTranslate2 stores identical tensors once and names the others as aliases of it (the tied
    # output projection always; zero biases and unit norms of a fresh model too): resolve them all.
    names = [k for k in m.names() if not k.endswith("_scale")]
    tensors = {k: _dequantize(m, k) for k in names}
    dtypes = {k: "float32" if tensors[k].dtype == np.float32 else m.dtypes[m.aliases.get(k, k)] for k in names}
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    scalars = {k: int(v) for k, v in tensors.items() if v.ndim == 0 and k.endswith("num_heads")}
    try:
        cfg = WhisperConfig.from_ct2(shapes, scalars, config)
    except KeyError as e:
        raise CheckpointError(f"{model_bin}: CTranslate2 Whisper model lacks variable {e}") from e
    return cfg, tensors, dtypes, CT2_MAP


def _dequantize(m, name: str) -> np.ndarray:
    """int8/int16 weights carry a per-row `<name>_scale`: value = q / scale."""
    arr = m.get(name)
    scale = m.get(f"{name}_scale") if f"{name}_scale" in m.names() else None
    if scale is None:
        return arr
    shape = arr.shape
    out = arr.reshape(shape[0], -1).astype(np.float32) / np.asarray(scale, np.float32).reshape(-1, 1)
    return out.reshape(shape)
