"""Random-weight Qwen3-ForcedAligner references for the tests, saved as real checkpoint directories.

The reference network is transformers' `Qwen3ASRForTokenClassification` (its port of Qwen's aligner;
Qwen's own `qwen-asr` 0.0.6 does not import under transformers 5: its modeling code calls
`check_model_inputs()` with the transformers-4 signature). `save_aligner` writes it in Qwen's
published layout (`thinker.` keys with the classifier as `thinker.lm_head`, `thinker_config` with
`model_type` "qwen3_forced_aligner" and `classify_num`, `timestamp_token_id` and
`timestamp_segment_time` at the top, vocab.json + merges.txt + tokenizer_config.json) or in
transformers' (its own `save_pretrained` config and state dict, tokenizer.json). The tokenizer is
Qwen3-ASR's test tokenizer with the `<timestamp>` special token added.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from qwen3_asr_refs import SPECIALS, _qwen_config, _qwen_name, make_tokenizer, randomize, save_safetensors, small_config

TIMESTAMP = "<timestamp>"
ALIGNER_SPECIALS = [*SPECIALS, (TIMESTAMP, True)]


def aligner_tokenizer():
    from tokenizers import AddedToken

    tok = make_tokenizer()
    tok.add_special_tokens([AddedToken(TIMESTAMP, special=True, normalized=False)])
    return tok


def aligner_config(tok, classes: int = 100) -> dict:
    """transformers' flat config for the token classifier at a small size; `classes` x 80 ms is the
    longest time it can name."""
    cfg = small_config(tok, tied=False)
    cfg["text_config"]["vocab_size"] = tok.get_vocab_size()
    return dict(cfg, num_labels=classes, timestamp_token_id=tok.token_to_id(TIMESTAMP))


def build_aligner(cfg: dict, seed: int = 0):
    """transformers' Qwen3ASRForTokenClassification at `cfg`, random weights (std 0.3 matrices, norms
    near 1, a classifier of std 1 so the classes are far apart), fp32, eval."""
    from transformers import Qwen3ASRConfig, Qwen3ASRForTokenClassification

    torch.manual_seed(seed)
    model = Qwen3ASRForTokenClassification(Qwen3ASRConfig(**cfg)).eval()
    return randomize(model, seed, std=lambda name: 1.0 if name.startswith("score.") else 0.3)


def _tokenizer_config(tok) -> dict:
    return {
        "tokenizer_class": "Qwen2Tokenizer",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "added_tokens_decoder": {
            str(tok.token_to_id(t)): {
                "content": t,
                "special": s,
                "normalized": False,
                "lstrip": False,
                "rstrip": False,
                "single_word": False,
            }
            for t, s in ALIGNER_SPECIALS
        },
    }


def save_aligner(model, cfg: dict, tok, directory: Path, layout: str = "qwen", *, drop=(), shards: int = 1) -> Path:
    """Write `model` as a checkpoint directory in `layout` ("qwen" | "transformers")."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if layout == "qwen":
        state = {_qwen_name(k.replace("score.", "lm_head.")): v for k, v in state.items()}
        config = _qwen_config(cfg)
        config["thinker_config"].update(model_type="qwen3_forced_aligner", classify_num=cfg["num_labels"])
        config.update(timestamp_token_id=cfg["timestamp_token_id"], timestamp_segment_time=80)
        config["support_languages"] = ["Chinese", "English", "Japanese", "Korean", "Russian"]
        tok.model.save(str(directory))  # vocab.json + merges.txt
    else:
        model.config.save_pretrained(directory)
        config = json.loads((directory / "config.json").read_text())
        tok.save(str(directory / "tokenizer.json"))
    for name in drop:
        del state[name]
    save_safetensors(state, directory, shards)
    (directory / "config.json").write_text(json.dumps(config, indent=1))
    (directory / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(tok), indent=1))
    return directory


def reference_align(model, tok, audio, text: str, language: str):
    """transformers' aligner path on one clip: its word splitting, Qwen's prompt
    (`encode_timestamp`: the audio, then every word followed by two `<timestamp>`), the processor's
    ids and features, the classifier, `decode_forced_alignment` -> ([{text, start_time, end_time}], ids)."""
    from qwen3_asr_refs import reference_processor

    proc = reference_processor(tok)
    words = proc.split_words_for_alignment(text, language)
    prompt = "<|audio_start|><|audio_pad|><|audio_end|>" + "".join(f"{w}{TIMESTAMP}{TIMESTAMP}" for w in words)
    inputs = proc(text=[prompt], audio=[audio], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    items = proc.decode_forced_alignment(logits, inputs["input_ids"], [words], model.config.timestamp_token_id)
    return items[0], inputs["input_ids"][0].tolist()
