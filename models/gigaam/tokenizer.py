"""GigaAM's vocabulary: token ids -> text, from the config's characters or the e2e models'
SentencePiece model, and emitted tokens -> words."""

from __future__ import annotations

import numpy as np

from polyasr.errors import CheckpointError
from polyasr.models.gigaam.config import GigaAMConfig

_WORD_START = "\u2581"  # SentencePiece's word-boundary mark


class Vocabulary:
    """Token ids -> text: GigaAM's characters, or the e2e models' SentencePiece model."""

    def __init__(self, cfg: GigaAMConfig, tokenizer_model=None):
        self.sp = None
        if tokenizer_model is None and cfg.model_path:
            raise CheckpointError(
                f"GigaAM config names a SentencePiece model ({cfg.model_path}) but no "
                "tokenizer.model (or <checkpoint>_tokenizer.model) was found beside the checkpoint"
            )
        if tokenizer_model is not None:
            import sentencepiece

            self.sp = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer_model))
            size = self.sp.get_piece_size()
        elif cfg.vocabulary:
            size = len(cfg.vocabulary)
        else:
            raise CheckpointError(
                "GigaAM checkpoint has neither a character vocabulary (decoding.vocabulary) "
                "nor a SentencePiece tokenizer.model beside it"
            )
        if size + 1 != cfg.num_classes:
            raise CheckpointError(
                f"GigaAM vocabulary has {size} tokens but the CTC head {cfg.num_classes} classes "
                "(expected tokens + 1 blank)"
            )
        self.chars = cfg.vocabulary

    def piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i)) if self.sp is not None else self.chars[int(i)]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        return self.sp.decode(ids) if self.sp is not None else "".join(self.chars[i] for i in ids)

    def words(self, ids: np.ndarray, frames: np.ndarray) -> list[tuple[list[int], list[int]]]:
        """Group emitted tokens into words -> [(token ids, their frames)]; spaces are dropped."""
        out, cur_ids, cur_frames = [], [], []
        for tok, frame in zip(ids.tolist(), frames.tolist()):
            piece = self.piece(tok)
            boundary = piece == " " or piece.startswith(_WORD_START)
            if boundary and cur_ids:
                out.append((cur_ids, cur_frames))
                cur_ids, cur_frames = [], []
            if piece != " ":
                cur_ids.append(tok)
                cur_frames.append(frame)
        if cur_ids:
            out.append((cur_ids, cur_frames))
        return out
