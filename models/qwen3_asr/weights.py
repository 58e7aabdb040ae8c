"""Qwen3-ASR weight names, per checkpoint layout -> canonical parameters (see model.param_shapes).

Two tables, one per layout, over the same tensors:

* Qwen's published layout (`Qwen/Qwen3-ASR-0.6B`, `-1.7B`; `qwen-asr`): everything under
  `thinker.`; the projector lives in the audio tower (`thinker.audio_tower.proj1/proj2`).
* transformers' `qwen3_asr` layout (`-hf` repositories): `model.audio_tower.`,
  `model.multi_modal_projector.linear_1/linear_2`, `model.language_model.`, `lm_head.`.

Our names are Qwen's without `thinker.`. q/k/v of both stacks and the MLP's gate/up are fused
(declared beside each table). With `tie_word_embeddings` the output projection is the token
embedding, and a stored `lm_head.weight` (Qwen's 0.6B file carries one) is dropped on purpose.
Reading the directory is `checkpoint.py`'s.
"""

from __future__ import annotations

from polyasr.errors import WeightsMismatchError
from polyasr.models.qwen3_asr.config import Qwen3ASRConfig
from polyasr.models.weight_map import WeightMap

_ENCODER = [f"conv2d{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")] + ["conv_out.weight"]
_ENCODER += [
    f"layers.{{}}.{m}.{p}"
    for m in ("self_attn.out_proj", "self_attn_layer_norm", "fc1", "fc2", "final_layer_norm")
    for p in ("weight", "bias")
]
_ENCODER += ["ln_post.weight", "ln_post.bias"]
_DECODER = ["embed_tokens.weight", "norm.weight"] + [
    f"layers.{{}}.{m}.weight"
    for m in (
        "input_layernorm",
        "post_attention_layernorm",
        "self_attn.o_proj",
        "self_attn.q_norm",
        "self_attn.k_norm",
        "mlp.down_proj",
    )
]
_PROJECTOR = {"proj1": "linear_1", "proj2": "linear_2"}  # ours/Qwen's -> transformers'


def _fusions(audio: str, text: str, attention_bias: bool) -> dict[str, tuple[str, ...]]:
    """q/k/v and gate/up of both stacks, with the layout's prefixes for the audio tower and decoder."""
    fuse = {}
    for p in ("weight", "bias"):
        fuse[f"audio_tower.layers.{{}}.self_attn.qkv.{p}"] = tuple(
            f"{audio}.layers.{{}}.self_attn.{n}_proj.{p}" for n in "qkv"
        )
    for p in ("weight", "bias") if attention_bias else ("weight",):
        fuse[f"model.layers.{{}}.self_attn.qkv.{p}"] = tuple(
            f"{text}.layers.{{}}.self_attn.{n}_proj.{p}" for n in "qkv"
        )
    fuse["model.layers.{}.mlp.gate_up.weight"] = (
        f"{text}.layers.{{}}.mlp.gate_proj.weight",
        f"{text}.layers.{{}}.mlp.up_proj.weight",
    )
    return fuse


def qwen_map(tied: bool, attention_bias: bool = False) -> WeightMap:
    """Qwen's published layout (`thinker.` prefix)."""
    rename = {f"thinker.audio_tower.{n}": f"audio_tower.{n}" for n in _ENCODER}
    rename.update(
        {f"thinker.audio_tower.{n}.{p}": f"audio_tower.{n}.{p}" for n in _PROJECTOR for p in ("weight", "bias")}
    )
    rename.update({f"thinker.model.{n}": f"model.{n}" for n in _DECODER})
    rename["thinker.lm_head.weight"] = None if tied else "lm_head.weight"
    if attention_bias:
        rename["thinker.model.layers.{}.self_attn.o_proj.bias"] = "model.layers.{}.self_attn.o_proj.bias"
    return WeightMap(rename, _fusions("thinker.audio_tower", "thinker.model", attention_bias))


def transformers_map(tied: bool, attention_bias: bool = False) -> WeightMap:
    """transformers' `qwen3_asr` layout (`model.` / `lm_head.`)."""
    rename = {f"model.audio_tower.{n}": f"audio_tower.{n}" for n in _ENCODER}
    rename.update(
        {
            f"model.multi_modal_projector.{theirs}.{p}": f"audio_tower.{ours}.{p}"
            for ours, theirs in _PROJECTOR.items()
            for p in ("weight", "bias")
        }
    )
    rename.update({f"model.language_model.{n}": f"model.{n}" for n in _DECODER})
    rename["lm_head.weight"] = None if tied else "lm_head.weight"
    if attention_bias:
        rename["model.language_model.layers.{}.self_attn.o_proj.bias"] = "model.layers.{}.self_attn.o_proj.bias"
    return WeightMap(rename, _fusions("model.audio_tower", "model.language_model", attention_bias))


def required_sources(wm: WeightMap, cfg: Qwen3ASRConfig) -> list[str]:
    """Every checkpoint tensor a table needs (renamed or fused; dropped ones are optional), layers expanded."""
    pairs = [(s, t) for s, t in wm.rename.items()] + [(s, t) for t, srcs in wm.fuse.items() for s in srcs]
    names = []
    for source, target in pairs:
        if target is None:
            continue
        n = cfg.audio.encoder_layers if "audio_tower" in source else cfg.text.num_hidden_layers
        names += [source.format(i) for i in range(n)] if "{}" in source else [source]
    return names


def check_present(tensors: dict, wm: WeightMap, cfg: Qwen3ASRConfig, source: str) -> None:
    """Name every missing tensor at once (the fusions would stop at the first)."""
    missing = [n for n in required_sources(wm, cfg) if n not in tensors]
    if missing:
        more = f" (+{len(missing) - 8} more)" if len(missing) > 8 else ""
        raise WeightsMismatchError(f"{source}: missing {len(missing)} tensor(s): {', '.join(missing[:8])}{more}")
