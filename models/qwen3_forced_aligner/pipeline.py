"""Qwen3-ForcedAligner's pipeline: (audio, text) -> words with times.

The text is cut into units (words.py), the audio goes through Qwen3-ASR's frontend and encoder,
the prompt (model.py) through the decoder once, and each `<timestamp>` slot's most likely class
k means k * timestamp_segment_time ms from the start of the audio piece. The times of a piece are
repaired to be non-decreasing (`fix_timestamps`) and rounded to ms, as Qwen's package does; a
unit's probability is the mean of its two slots' class probabilities. Several pieces (a
transcript's segments) run `batch_size` at a time, their prompts left-padded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from polyasr.errors import CheckpointError, InvalidOptionError
from polyasr.models.base import AsrModel, Capabilities, ModelOutput
from polyasr.models.qwen3_asr import model as asr
from polyasr.models.qwen3_asr.features import SAMPLE_RATE, log_mel, mel_config
from polyasr.models.qwen3_asr.prompt import LANGUAGES, language_code
from polyasr.models.qwen3_asr.tokenizer import AUDIO_END, AUDIO_START, Qwen3Tokenizer
from polyasr.models.qwen3_forced_aligner import model as net
from polyasr.models.qwen3_forced_aligner.checkpoint import load_checkpoint
from polyasr.models.qwen3_forced_aligner.words import Unit, fix_timestamps, split_units, word_texts
from polyasr.result import Segment, Word

TIMESTAMP = "<timestamp>"
# Qwen's package aligns at most this much audio at once (MAX_FORCE_ALIGN_INPUT_SECONDS).
MAX_PIECE_SECS = 180.0
# Units the space / CJK rule cannot find: Qwen segments these languages with nagisa / soynlp.
NEEDS_SEGMENTER = {"ja": "nagisa", "ko": "soynlp"}


@dataclass
class Piece:
    """One alignment: audio (16 kHz), its units, and where the audio starts in the file (seconds)."""

    audio: np.ndarray
    units: list[Unit]
    offset: float = 0.0


class ForcedAlignerModel(AsrModel):
    sample_rate = SAMPLE_RATE
    capabilities = Capabilities(forced_alignment=True)

    def __init__(self, name: str, ckpt, B):
        self.name, self.cfg, self.B, self.format = name, ckpt.cfg, B, ckpt.format
        self.tok = Qwen3Tokenizer(ckpt.directory)
        ids = {"<|audio_pad|>": (self.tok.audio_pad, self.cfg.backbone.audio_token_id)}
        ids[TIMESTAMP] = (self.tok.id(TIMESTAMP), self.cfg.timestamp_token_id)
        for token, (found, declared) in ids.items():
            if found != declared:
                raise CheckpointError(
                    f"{ckpt.directory}: config.json says {token} is id {declared}, the tokenizer has {found}"
                )
        self.prefix = [self.tok.id(AUDIO_START), self.tok.audio_pad, self.tok.id(AUDIO_END)]
        self.params = net.prepare({k: B.param(v, ckpt.dtypes.get(k)) for k, v in ckpt.params.items()}, self.cfg, B)
        self.mel = mel_config(self.cfg.audio.num_mel_bins)
        self.languages = tuple(language_code(n) for n in self.cfg.languages)

    @property
    def max_secs(self) -> float:
        return min(MAX_PIECE_SECS, self.cfg.max_secs)

    def check_options(self, opts) -> None:
        raise InvalidOptionError(
            f"{self.name} is a forced aligner: it times a given text and does not transcribe; use "
            f"`polyasr align AUDIO TEXT --model {self.name}` (engine.align), or `--aligner {self.name}` "
            "with a transcribing model"
        )

    def language_code(self, language: str) -> str:
        return language_code(LANGUAGES.get(language.strip().lower(), language))

    def language_label(self, code: str) -> str:
        return f"{code} ({LANGUAGES[code]})" if code in LANGUAGES else code

    def check_language(self, language: str | None) -> str | None:
        """A language as the user wrote it -> its ISO code, refused unless this aligner can split
        and time it; None (not given) stays None and the text is split by the space / CJK rule."""
        if language is None:
            return None
        code = self.language_code(language)
        if code not in self.languages:
            listed = ", ".join(self.language_label(c) for c in self.languages if c not in NEEDS_SEGMENTER)
            raise InvalidOptionError(f"{self.name} cannot align language {language!r}; it aligns: {listed}")
        if code in NEEDS_SEGMENTER:
            raise InvalidOptionError(
                f"{self.name}: aligning {LANGUAGES[code]} needs its word segmenter ({NEEDS_SEGMENTER[code]}), "
                "which polyasr does not ship yet"
            )
        return code

    def check_piece(self, piece: Piece, what: str = "the audio") -> None:
        """Refuse audio the classes cannot time and text the audio cannot hold, before any work."""
        secs, step = len(piece.audio) / self.sample_rate, self.cfg.timestamp_segment_time
        if len(piece.audio) < self.mel.hop_length:
            raise InvalidOptionError(f"{what} is too short to align ({len(piece.audio)} samples)")
        if secs > self.max_secs:
            raise InvalidOptionError(
                f"{what} lasts {secs:.1f} s; {self.name} aligns at most {self.max_secs:.0f} s at once: "
                "split the audio and its text"
            )
        slots = int(secs * 1000 // step) + 1
        if len(piece.units) > slots:
            raise InvalidOptionError(
                f"the text has {len(piece.units)} words but {what} ({secs:.2f} s) holds only {slots} "
                f"timestamps of {step:g} ms: the text is far longer than the audio can carry (the wrong text?)"
            )

    def align(self, audio: np.ndarray, text: str, language: str | None = None) -> ModelOutput:
        """audio (N,) 16 kHz float32, a transcript -> one segment per non-empty line of the text,
        each with its words timed (seconds from the start of the audio)."""
        code = self.check_language(language)
        lines = [" " + line.strip() for line in text.splitlines() if split_units(line)]
        if not lines:
            raise InvalidOptionError("the text to align has no words (it is empty, or only punctuation)")
        per_line = [split_units(line) for line in lines]
        piece = Piece(np.asarray(audio, dtype=np.float32), [u for units in per_line for u in units])
        self.check_piece(piece)
        timings: dict[str, float] = {}
        times = iter(self.time_units([piece], 1, timings)[0])  # consumed line by line
        segments = []
        for line, units in zip(lines, per_line):
            words = [Word(a, b, w, p) for w, (a, b, p) in zip(word_texts(line, units), times)]
            conf = float(np.mean([w.probability for w in words]))
            segments.append(Segment(words[0].start, words[-1].end, line, conf, words=words))
        return ModelOutput(segments, code, checkpoint_format=self.format, timings=timings)

    def align_segments(self, audio: np.ndarray, segments: list[Segment], language, batch_size: int = 1) -> list[int]:
        """Time the words of a transcript's segments, each within its own stretch of `audio`:
        sets `segment.words`; returns the indices of segments left without words (no words in the
        text, audio too long for the aligner, or more words than the stretch can hold)."""
        self.check_language(language)
        jobs, skipped = [], []
        for i, seg in enumerate(segments):
            a, b = round(seg.start * self.sample_rate), round(seg.end * self.sample_rate)
            piece = Piece(audio[a:b], split_units(seg.text), a / self.sample_rate)
            try:
                if not piece.units:
                    raise InvalidOptionError("no words")
                self.check_piece(piece)
            except InvalidOptionError:
                skipped.append(i)
                continue
            jobs.append((seg, piece))
        for s in range(0, len(jobs), batch_size):
            batch = jobs[s : s + batch_size]
            for (seg, piece), times in zip(batch, self.time_units([p for _, p in batch], batch_size, {})):
                seg.words = [
                    Word(round(piece.offset + a, 3), round(piece.offset + b, 3), text, p)
                    for (a, b, p), text in zip(times, word_texts(seg.text, piece.units))
                ]
        return skipped

    def time_units(self, pieces: list[Piece], batch_size: int, timings: dict) -> list[list[tuple[float, float, float]]]:
        """Pieces -> per unit (start s, end s, probability), times within each piece."""
        out = []
        for s in range(0, len(pieces), batch_size):
            out += self._time_batch(pieces[s : s + batch_size], timings)
        return out

    def _time_batch(self, pieces: list[Piece], timings: dict):
        return self.times_from_logits(self.slot_logits(pieces, timings), pieces)

    def times_from_logits(self, logits: np.ndarray, pieces: list[Piece]):
        """Slot logits (sum 2 * units, classes), pieces in order -> per piece, per unit (start s, end s,
        probability): the most likely class times the class duration, repaired, in seconds to the ms."""
        classes = logits.argmax(axis=-1)
        probs = 1.0 / np.exp(logits - logits.max(axis=-1, keepdims=True)).sum(axis=-1)  # softmax at the argmax
        step, results, start = np.float32(self.cfg.timestamp_segment_time), [], 0
        for p in pieces:
            n = 2 * len(p.units)
            ms, pr = fix_timestamps(classes[start : start + n].astype(np.float32) * step), probs[start : start + n]
            results.append(
                [
                    (round(ms[2 * i] / 1000, 3), round(ms[2 * i + 1] / 1000, 3), float(pr[2 * i] + pr[2 * i + 1]) / 2)
                    for i in range(len(p.units))
                ]
            )
            start += n
        return results

    def slot_logits(self, pieces: list[Piece], timings: dict | None = None) -> np.ndarray:
        """Pieces -> the class logits of their `<timestamp>` slots, pieces in order (sum 2 * units, classes)."""
        B, t0, timings = self.B, time.perf_counter(), {} if timings is None else timings
        with B.no_grad():
            feats, frames = log_mel([p.audio for p in pieces], self.mel, B)
            embeds, tokens = asr.encode(self.params, self.cfg.backbone, B, B.cast(feats), frames)
            B.evaluate(embeds)  # lazy (MLX) and asynchronous (CUDA) backends: count the encoder's time here
            t1 = time.perf_counter()
            prompts = [self.prompt(n, p.units) for n, p in zip(tokens, pieces)]
            length = max(len(p) for p in prompts)
            pad = np.array([length - len(p) for p in prompts], dtype=np.int64)
            ids = np.array([[self.prefix[0]] * k + p for k, p in zip(pad, prompts)], dtype=np.int64)
            x = B.masked_scatter(
                asr.embed(self.params, B, B.asarray(ids)), B.asarray(ids == self.tok.audio_pad), embeds
            )
            slots = np.flatnonzero(ids.reshape(-1) == self.cfg.timestamp_token_id)
            logits = net.timestamp_logits(self.params, self.cfg, B, x, pad, slots)
        timings["encoder"] = timings.get("encoder", 0.0) + t1 - t0
        timings["decoder"] = timings.get("decoder", 0.0) + time.perf_counter() - t1
        return logits

    def prompt(self, audio_tokens: int, units: list[Unit]) -> list[int]:
        """Qwen's aligner prompt: the audio, then each unit followed by its two `<timestamp>` slots."""
        ts = self.cfg.timestamp_token_id
        ids = [self.prefix[0]] + [self.prefix[1]] * audio_tokens + [self.prefix[2]]
        for u in units:
            ids += self.tok.encode(u.text) + [ts, ts]
        return ids


def load_model(spec, path, B) -> ForcedAlignerModel:
    return ForcedAlignerModel(spec.id, load_checkpoint(path), B)
