"""Parakeet token ids -> text, through a maintained tokenizer library.

`.nemo` archives carry a SentencePiece model (read by `sentencepiece` from its bytes);
transformers directories carry `tokenizer.json` (read by `tokenizers`). Ids 0..vocab_size-1 are
the SentencePiece pieces in both; the blank (id vocab_size) never reaches the tokenizer.
"""

from __future__ import annotations

import unicodedata
from functools import cached_property
from pathlib import Path

from polyasr.errors import CheckpointError
from polyasr.models.checkpoint_io import read_hf_tokenizer

WORD_START = "\u2581"  # SentencePiece's word-boundary mark


class ParakeetTokenizer:
    def __init__(
        self,
        vocab_size: int,
        *,
        sentencepiece_model: bytes | None = None,
        tokenizer_json: Path | None = None,
        source: str = "checkpoint",
    ):
        self._sp = self._hf = None
        if sentencepiece_model is not None:
            import sentencepiece

            self._sp = sentencepiece.SentencePieceProcessor()
            try:
                self._sp.LoadFromSerializedProto(sentencepiece_model)
            except (RuntimeError, OSError) as e:
                raise CheckpointError(f"{source}: the tokenizer model is not a SentencePiece model ({e})") from e
            size = self._sp.get_piece_size()
        elif tokenizer_json is not None:
            self._hf = read_hf_tokenizer(tokenizer_json)
            size = sum(1 for i in range(vocab_size) if self._hf.id_to_token(i) is not None)
        else:
            raise CheckpointError(
                f"{source}: no tokenizer (a SentencePiece *tokenizer.model in the .nemo archive, "
                "or tokenizer.json beside config.json)"
            )
        if size != vocab_size:
            raise CheckpointError(f"{source}: the tokenizer has {size} pieces but the model {vocab_size} tokens")
        self.vocab_size = vocab_size

    def piece(self, token_id: int) -> str:
        return self._sp.id_to_piece(int(token_id)) if self._sp is not None else self._hf.id_to_token(int(token_id))

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self._sp is not None:
            return self._sp.decode(ids)
        return self._hf.decode(ids, skip_special_tokens=True)

    def starts_word(self, token_id: int) -> bool:
        return self.piece(token_id).startswith(WORD_START)

    @cached_property
    def punctuation(self) -> frozenset[str]:
        """Every punctuation character (Unicode category P*) in the vocabulary's pieces."""
        pieces = (self.piece(i) for i in range(self.vocab_size))
        return frozenset(c for piece in pieces for c in piece if unicodedata.category(c).startswith("P"))
