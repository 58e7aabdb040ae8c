"""Qwen3-ASR's tokenizer: Qwen2 byte-level BPE, read with the `tokenizers` library.

A checkpoint has `tokenizer.json`, or `vocab.json` + `merges.txt` (+ the added tokens listed in
`tokenizer_config.json` under `added_tokens_decoder`); the second is built the way transformers'
`Qwen2Tokenizer` builds it (NFC, Qwen2's split regex, byte-level, no unknown token). Special
tokens are looked up by their text, never assumed to sit at the released ids.
"""

from __future__ import annotations

from pathlib import Path

from polyasr.errors import CheckpointError
from polyasr.models.checkpoint_io import read_config, read_hf_tokenizer

# transformers' Qwen2 pre-tokenisation split (letters, digits one by one, punctuation, spaces, newlines).
QWEN2_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

AUDIO_PAD, AUDIO_START, AUDIO_END = "<|audio_pad|>", "<|audio_start|>", "<|audio_end|>"
ASR_TEXT, IM_START, IM_END, END_OF_TEXT = "<asr_text>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"
_REQUIRED = (AUDIO_PAD, AUDIO_START, AUDIO_END, ASR_TEXT, IM_START, IM_END)


def _from_vocab_merges(directory: Path, added: dict):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    try:
        tok = Tokenizer(models.BPE.from_file(str(directory / "vocab.json"), str(directory / "merges.txt")))
    except Exception as e:  # tokenizers raises a bare Exception on malformed files
        raise CheckpointError(f"{directory}: vocab.json + merges.txt are not a readable BPE vocabulary ({e})") from e
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    for i, t in sorted(added.items(), key=lambda kv: int(kv[0])):
        token = AddedToken(
            t["content"],
            special=t.get("special", False),
            normalized=t.get("normalized", False),
            lstrip=t.get("lstrip", False),
            rstrip=t.get("rstrip", False),
            single_word=t.get("single_word", False),
        )
        (tok.add_special_tokens if t.get("special", False) else tok.add_tokens)([token])
        if tok.token_to_id(t["content"]) != int(i):
            raise CheckpointError(
                f"{directory}: added token {t['content']!r} is id {i} in tokenizer_config.json but "
                f"lands at {tok.token_to_id(t['content'])} after vocab.json"
            )
    return tok


class Qwen3Tokenizer:
    def __init__(self, directory: Path):

        directory = Path(directory)
        self.config = read_config(directory / "tokenizer_config.json", optional=True)
        if (directory / "tokenizer.json").exists():
            self.tok = read_hf_tokenizer(directory / "tokenizer.json")
        elif (directory / "vocab.json").exists() and (directory / "merges.txt").exists():
            self.tok = _from_vocab_merges(directory, self.config.get("added_tokens_decoder", {}))
        else:
            raise CheckpointError(f"{directory}: no tokenizer.json nor vocab.json + merges.txt")
        missing = [t for t in _REQUIRED if self.tok.token_to_id(t) is None]
        if missing:
            raise CheckpointError(f"{directory}: the tokenizer lacks Qwen3-ASR's tokens {', '.join(missing)}")
        self.audio_pad, self.asr_text = self.id(AUDIO_PAD), self.id(ASR_TEXT)
        self.stop_ids = {self.id(t) for t in (IM_END, END_OF_TEXT) if self.tok.token_to_id(t) is not None}

    def id(self, token: str) -> int:
        return self.tok.token_to_id(token)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)
