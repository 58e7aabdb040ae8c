"""Whisper's special tokens and text codec, over the checkpoint's own `tokenizer.json`.

Every id is looked up in the tokenizer (nothing hard-coded per size): English-only and
multilingual vocabularies differ by one, and large-v3 adds a language. Timestamp tokens
follow `<|notimestamps|>` directly and need not exist in tokenizer.json.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from polyasr.errors import CheckpointError, InvalidOptionError
from polyasr.models.checkpoint_io import read_hf_tokenizer

# Symbols Whisper is told never to emit (speaker tags, music notes, brackets): the same set
# the reference computes; used only when the checkpoint does not list its suppress tokens.
_NON_SPEECH = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』') + (
    "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
)
_MISC = set("♩♪♫♬♭♮♯")


class WhisperTokenizer:
    def __init__(self, tokenizer_file: Path, multilingual: bool):
        self.tk = read_hf_tokenizer(tokenizer_file)
        self.multilingual = multilingual
        ids = {
            name: self._id(name)
            for name in (
                "<|endoftext|>",
                "<|startoftranscript|>",
                "<|translate|>",
                "<|transcribe|>",
                "<|startoflm|>",
                "<|startofprev|>",
                "<|notimestamps|>",
            )
        }
        self.eot, self.sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
        self.translate, self.transcribe = ids["<|translate|>"], ids["<|transcribe|>"]
        self.sot_lm, self.sot_prev = ids["<|startoflm|>"], ids["<|startofprev|>"]
        self.no_timestamps = ids["<|notimestamps|>"]
        self.no_speech = self.tk.token_to_id("<|nospeech|>") or self._id("<|nocaptions|>")
        self.timestamp_begin = self.no_timestamps + 1
        # Language tokens sit between <|startoftranscript|> and <|translate|>.
        self.languages = {self.tk.id_to_token(i)[2:-2]: i for i in range(self.sot + 1, self.translate)}

    def _id(self, token: str) -> int:
        i = self.tk.token_to_id(token)
        if i is None:
            raise CheckpointError(f"tokenizer.json lacks Whisper's special token {token}")
        return i

    def encode(self, text: str) -> list[int]:
        return self.tk.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        """Text of the ids below <|endoftext|> (special and timestamp tokens are dropped)."""
        return self.tk.decode([int(i) for i in ids if i < self.eot], skip_special_tokens=False)

    def language_token(self, language: str) -> int:
        if language not in self.languages:
            raise InvalidOptionError(
                f"language {language!r} is not one this model knows; known: {', '.join(sorted(self.languages))}"
            )
        return self.languages[language]

    def sot_sequence(self, language: str | None, task: str) -> list[int]:
        """<|startoftranscript|> [<|lang|> <|task|>]; English-only models take <|startoftranscript|> alone."""
        if not self.multilingual:
            return [self.sot]
        seq = [self.sot]
        if language is not None:
            seq.append(self.language_token(language))
        seq.append(self.translate if task == "translate" else self.transcribe)
        return seq

    @cached_property
    def non_speech_tokens(self) -> list[int]:
        """Ids of tokens that are (or start with) the symbols above, with and without a leading space."""
        result = {self.encode(" -")[0], self.encode(" '")[0]}
        for symbol in _NON_SPEECH + sorted(_MISC):
            for tokens in (self.encode(symbol), self.encode(" " + symbol)):
                if len(tokens) == 1 or symbol in _MISC:
                    result.add(tokens[0])
        return sorted(result)
