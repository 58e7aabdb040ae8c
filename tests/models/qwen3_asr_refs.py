"""Random-weight Qwen3-ASR references for the tests, saved as real checkpoint directories.

`build_reference` makes a transformers `Qwen3ASRForConditionalGeneration` at a small config
with weights large enough that greedy choices are decisive. `save_checkpoint` writes it in
Qwen's published layout (`thinker.` keys, `thinker_config`, vocab.json + merges.txt +
tokenizer_config.json with the chat template inside) or in transformers' `qwen3_asr` layout
(`model.` / `lm_head.` keys, flat config, tokenizer.json + chat_template.jinja). The tokenizer is
a small byte-level BPE trained here with Qwen's special tokens appended (their released ids are
151643+; here they follow the trained vocabulary). The chat template renders what Qwen's does for
an ASR request (system turn, user turn with one audio, assistant header).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

SPECIALS = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|audio_start|>", True),
    ("<|audio_end|>", True),
    ("<|audio_pad|>", True),
    ("<asr_text>", False),
]

CHAT_TEMPLATE = (
    "{%- for message in messages %}\n"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}\n"
    "{%- if message['content'] is string %}\n"
    "{{- message['content'] }}\n"
    "{%- else %}\n"
    "{%- for part in message['content'] %}\n"
    "{%- if part['type'] == 'audio' %}\n"
    "{{- '<|audio_start|><|audio_pad|><|audio_end|>' }}\n"
    "{%- elif part['type'] == 'text' %}\n"
    "{{- part['text'] }}\n"
    "{%- endif %}\n"
    "{%- endfor %}\n"
    "{%- endif %}\n"
    "{{- '<|im_end|>\\n' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "{{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

_CORPUS = [
    "language English",
    "language Russian",
    "language Chinese",
    "language None",
    "the quick brown fox",
    "jumps over the lazy dog",
    "system user assistant",
    "Привет, как дела? Всё хорошо.",
    "hello world 12345",
    "speech recognition is fun",
    "Transcribe the audio.",
] * 20


def make_tokenizer():
    """A byte-level BPE (Qwen2 pre-tokenisation) with Qwen3-ASR's special tokens after its vocabulary."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    from polyasr.models.qwen3_asr.tokenizer import QWEN2_SPLIT

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=330, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(_CORPUS, trainer)
    for text, special in SPECIALS:
        token = AddedToken(text, special=special, normalized=False)
        (tok.add_special_tokens if special else tok.add_tokens)([token])
    return tok


def token_ids(tok) -> dict[str, int]:
    return {text: tok.token_to_id(text) for text, _ in SPECIALS}


def small_config(tok, *, tied: bool = True, n_window_infer: int = 200, layers: int = 2) -> dict:
    """transformers' flat config dict (audio_config / text_config) at a small size."""
    ids = token_ids(tok)
    audio = dict(
        num_mel_bins=128,
        encoder_layers=layers,
        encoder_attention_heads=2,
        encoder_ffn_dim=64,
        d_model=32,
        n_window=50,
        output_dim=48,
        n_window_infer=n_window_infer,
        downsample_hidden_size=8,
    )
    text = dict(
        vocab_size=400,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tied,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    return dict(
        audio_config=audio,
        text_config=text,
        audio_token_id=ids["<|audio_pad|>"],
        pad_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        tie_word_embeddings=tied,
    )


def build_reference(cfg: dict, seed: int = 0):
    """transformers' model at `cfg` with random weights (std 0.3 matrices, norms near 1), fp32, eval."""
    from transformers import Qwen3ASRConfig, Qwen3ASRForConditionalGeneration

    torch.manual_seed(seed)
    return randomize(Qwen3ASRForConditionalGeneration(Qwen3ASRConfig(**cfg)).eval(), seed)


def randomize(model, seed: int, std=lambda name: 0.3):
    """Fill a transformers Qwen3-ASR model's weights in place: norms near 1, every other tensor
    normal with `std(name)`; eager attention (the reference the tests compare with) -> the model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layer_norm.weight" in name or name.endswith("ln_post.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std(name) * torch.randn(p.shape, generator=g))
    model.config._attn_implementation = "eager"
    return model


def _qwen_name(name: str) -> str:
    """transformers' key -> Qwen's published key."""
    name = name.replace("model.multi_modal_projector.linear_1", "thinker.audio_tower.proj1")
    name = name.replace("model.multi_modal_projector.linear_2", "thinker.audio_tower.proj2")
    name = name.replace("model.audio_tower.", "thinker.audio_tower.").replace("model.language_model.", "thinker.model.")
    return name.replace("lm_head.", "thinker.lm_head.")


def _qwen_config(cfg: dict) -> dict:
    text = {k: v for k, v in cfg["text_config"].items() if k != "rope_parameters"}
    text.update(
        rope_theta=cfg["text_config"]["rope_parameters"]["rope_theta"],
        model_type="qwen3_asr_text",
        rope_scaling={
            "interleaved": True,
            "mrope_interleaved": True,
            "mrope_section": [4, 2, 2],
            "rope_type": "default",
        },
    )
    audio = dict(
        cfg["audio_config"], max_source_positions=1500, conv_chunksize=500, model_type="qwen3_asr_audio_encoder"
    )
    thinker = dict(
        audio_config=audio, text_config=text, audio_token_id=cfg["audio_token_id"], model_type="qwen3_asr_thinker"
    )
    return {
        "architectures": ["Qwen3ASRForConditionalGeneration"],
        "model_type": "qwen3_asr",
        "thinker_config": thinker,
        "support_languages": ["Chinese", "English", "Russian", "German"],
    }


def save_safetensors(state: dict[str, torch.Tensor], directory: Path, shards: int = 1):
    from safetensors.torch import save_file

    names = sorted(state)
    if shards == 1:
        save_file({k: state[k].contiguous() for k in names}, str(directory / "model.safetensors"))
        return
    weight_map = {}
    for i, part in enumerate(np.array_split(np.array(names), shards)):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: state[k].contiguous() for k in part}, str(directory / fname))
        weight_map.update({k: fname for k in part})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def save_checkpoint(
    model,
    cfg: dict,
    tok,
    directory: Path,
    layout: str = "qwen",
    *,
    keep_lm_head: bool = True,
    drop: tuple[str, ...] = (),
    shards: int = 2,
) -> Path:
    """Write `model` as a checkpoint directory in `layout` ("qwen" | "transformers")."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if cfg["text_config"]["tie_word_embeddings"] and not keep_lm_head:
        del state["lm_head.weight"]
    if layout == "qwen":
        state = {_qwen_name(k): v for k, v in state.items()}
        config = _qwen_config(cfg)
    else:
        config = dict(cfg, model_type="qwen3_asr", architectures=["Qwen3ASRForConditionalGeneration"])
    for name in drop:
        del state[name]
    save_safetensors(state, directory, shards)
    (directory / "config.json").write_text(json.dumps(config, indent=1))
    ids = token_ids(tok)
    tok_config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "extra_special_tokens": {
            "audio_token": "<|audio_pad|>",
            "audio_bos_token": "<|audio_start|>",
            "audio_eos_token": "<|audio_end|>",
        },
        "added_tokens_decoder": {
            str(ids[t]): {
                "content": t,
                "special": s,
                "normalized": False,
                "lstrip": False,
                "rstrip": False,
                "single_word": False,
            }
            for t, s in SPECIALS
        },
    }
    if layout == "qwen":
        tok.model.save(str(directory))  # vocab.json + merges.txt
        tok_config["chat_template"] = CHAT_TEMPLATE
    else:
        tok.save(str(directory / "tokenizer.json"))
        (directory / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (directory / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=1, ensure_ascii=False))
    return directory


def reference_processor(tok):
    """transformers' Qwen3ASRProcessor over the same tokenizer and template."""
    from transformers import PreTrainedTokenizerFast, Qwen3ASRFeatureExtractor, Qwen3ASRProcessor

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={
            "audio_token": "<|audio_pad|>",
            "audio_bos_token": "<|audio_start|>",
            "audio_eos_token": "<|audio_end|>",
        },
    )
    return Qwen3ASRProcessor(feature_extractor=Qwen3ASRFeatureExtractor(), tokenizer=fast, chat_template=CHAT_TEMPLATE)


def official_prompt(processor, language: str | None = None, context: str = "") -> str:
    """The prompt string Qwen's package builds (`Qwen3ASRModel._build_text_prompt`), via the processor."""
    msgs = [{"role": "system", "content": context}, {"role": "user", "content": [{"type": "audio", "audio": ""}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    return text + (f"language {language}<asr_text>" if language else "")
