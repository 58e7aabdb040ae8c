"""Qwen3-ForcedAligner weight names, per checkpoint layout -> canonical parameters (model.param_shapes).

The encoder and decoder tensors are Qwen3-ASR's, under the same names in the same two layouts, so
each table is Qwen3-ASR's (models/qwen3_asr/weights.py) with the head renamed:

* Qwen's published layout: the timestamp classifier is `thinker.lm_head.weight` (classes, hidden).
* transformers' `Qwen3ASRForTokenClassification`: `score.weight` (+ `score.bias` with
  `token_classification_bias`); it stores no `lm_head`.

The classifier is ours as `score`. The decoder's token embedding is only an input table here.
"""

from __future__ import annotations

from polyasr.models.qwen3_asr.weights import qwen_map, transformers_map
from polyasr.models.weight_map import WeightMap


def aligner_qwen_map(attention_bias: bool = False) -> WeightMap:
    """Qwen's published layout (`thinker.` prefix)."""
    wm = qwen_map(tied=True, attention_bias=attention_bias)
    rename = {**wm.rename, "thinker.lm_head.weight": "score.weight"}
    return WeightMap(rename, wm.fuse)


def aligner_transformers_map(attention_bias: bool = False, head_bias: bool = False) -> WeightMap:
    """transformers' `Qwen3ASRForTokenClassification` layout (`model.` / `score.`)."""
    wm = transformers_map(tied=True, attention_bias=attention_bias)
    rename = {k: v for k, v in wm.rename.items() if k != "lm_head.weight"}
    rename["score.weight"] = "score.weight"
    if head_bias:
        rename["score.bias"] = "score.bias"
    return WeightMap(rename, wm.fuse)
