"""Qwen3-ASR's pipeline, audio -> ModelOutput.

A file is cut at pauses into pieces of at most `chunk_secs` (default 30 s) without overlap
(models/chunking.py); pieces of one or several files run `batch_size` at a time: log-mel ->
audio encoder -> prompt embeddings with the audio spliced in -> greedy decoding. Each piece with
text becomes one `Segment` spanning the piece. Digitally silent pieces are not decoded (empty
text). Forced language: `opts.language` (ISO code or name) appends `language <Name><asr_text>`
to the prompt as Qwen's package does; otherwise the model's own `language X` tag is parsed off
and reported (as an ISO code).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from polyasr.errors import CheckpointError
from polyasr.models.base import AsrModel, Capabilities, ModelOutput
from polyasr.models.checkpoint_io import read_config
from polyasr.models.qwen3_asr import model as net
from polyasr.models.qwen3_asr.checkpoint import load_checkpoint
from polyasr.models.qwen3_asr.decode import DecodeStats, Generation, greedy, max_new_tokens
from polyasr.models.qwen3_asr.features import SAMPLE_RATE, log_mel, mel_config, pad_short
from polyasr.models.qwen3_asr.prompt import (
    LANGUAGES,
    PromptBuilder,
    language_code,
    language_name,
    load_chat_template,
    parse_answer,
)
from polyasr.models.qwen3_asr.tokenizer import Qwen3Tokenizer
from polyasr.models.vad_guided import chunk_plans
from polyasr.result import Segment

CHUNK_SECS = 30.0
SILENCE_PEAK = 1e-4  # -80 dBFS: below this a piece is digital silence


@dataclass
class Piece:
    """One decoded piece of audio: the language name the model gave (or the forced one), its text."""

    language: str
    text: str
    generation: Generation


class Qwen3ASRModel(AsrModel):
    sample_rate = SAMPLE_RATE
    # Word timestamps come from Qwen3-ForcedAligner, run by the engine after transcribing.
    capabilities = Capabilities(
        batched_inputs=True, language_detection=True, speech_chunks=True, aligner="qwen3-forced-aligner-0.6b"
    )

    def __init__(self, name: str, ckpt, B):
        self.name, self.cfg, self.B, self.format = name, ckpt.cfg, B, ckpt.format
        self.tok = Qwen3Tokenizer(ckpt.directory)
        if self.tok.audio_pad != self.cfg.audio_token_id:
            raise CheckpointError(
                f"{ckpt.directory}: config audio_token_id {self.cfg.audio_token_id} is not the "
                f"tokenizer's <|audio_pad|> ({self.tok.audio_pad})"
            )
        self.prompt = PromptBuilder(self.tok, load_chat_template(ckpt.directory))
        self.stop_ids = frozenset(self.tok.stop_ids | set(self.cfg.eos_token_id) | _generation_eos(ckpt.directory))
        self.params = net.prepare({k: B.param(v, ckpt.dtypes.get(k)) for k, v in ckpt.params.items()}, self.cfg, B)
        self.mel = mel_config(self.cfg.audio.num_mel_bins)
        supported = self.cfg.support_languages or tuple(LANGUAGES.values())
        self.languages = tuple(language_code(name) for name in supported)

    def language_code(self, language: str) -> str:
        """Qwen's prompt takes names: "Russian" and "ru" both mean ru."""
        return language_code(LANGUAGES.get(language, language))

    def language_label(self, code: str) -> str:
        return f"{code} ({LANGUAGES[code]})" if code in LANGUAGES else code

    def encode(self, audios: list[np.ndarray], timings: dict):
        """Signals -> packed audio embeddings (sum tokens, hidden) and tokens per item."""
        t0 = time.perf_counter()
        feats, frames = log_mel(audios, self.mel, self.B)
        self.B.evaluate(feats)
        t1 = time.perf_counter()
        out = net.encode(self.params, self.cfg, self.B, self.B.cast(feats), frames)
        self.B.evaluate(out[0])  # lazy (MLX) and asynchronous (CUDA) backends: count the encoder's time here
        timings["features"] = timings.get("features", 0.0) + t1 - t0
        timings["encoder"] = timings.get("encoder", 0.0) + time.perf_counter() - t1
        return out

    def prompt_embeddings(self, audio_embeds, tokens: list[int], language: str | None, context: str = ""):
        """Left-padded prompt ids -> embeddings with the audio spliced in (B, L, h), and the padding per row."""
        prompts = [self.prompt.ids(n, language, context) for n in tokens]
        length = max(len(p) for p in prompts)
        pad = np.array([length - len(p) for p in prompts], dtype=np.int64)
        fill = min(self.stop_ids)  # never the audio placeholder
        ids = np.array([[fill] * k + p for k, p in zip(pad, prompts)], dtype=np.int64)
        x = net.embed(self.params, self.B, self.B.asarray(ids))
        return self.B.masked_scatter(x, self.B.asarray(ids == self.tok.audio_pad), audio_embeds), pad

    def recognize(
        self,
        audios: list[np.ndarray],
        language: str | None = None,
        *,
        context: str = "",
        guard: bool = True,
        timings: dict | None = None,
        stats: DecodeStats | None = None,
    ) -> list[Piece]:
        """A batch of pieces (16 kHz float32) -> one Piece each; `language` is a prompt name ("Russian"),
        `context` Qwen's system-turn text."""
        timings = {} if timings is None else timings
        audios = [pad_short(np.asarray(a, dtype=np.float32)) for a in audios]
        with self.B.no_grad():
            embeds, tokens = self.encode(audios, timings)
            t0 = time.perf_counter()
            x, pad = self.prompt_embeddings(embeds, tokens, language, context)
            bounds = [max_new_tokens(len(a) / self.sample_rate) for a in audios]
            guard_text = self.tok.decode if guard else None
            gens = greedy(self.params, self.cfg, self.B, x, pad, bounds, self.stop_ids, guard_text, stats)
            timings["decoder"] = timings.get("decoder", 0.0) + time.perf_counter() - t0
        return [Piece(*parse_answer(self.tok, g.tokens, language), g) for g in gens]

    def _transcribe(self, audio, opts, progress=None) -> ModelOutput:
        return self._transcribe_many([audio], opts, progress)[0]

    def _transcribe_many(self, audios: list, opts, progress=None) -> list[ModelOutput]:
        """Several files, their pieces batched together `opts.batch_size` at a time -> one
        ModelOutput per file; segments and language equal transcribing the file alone, timings are
        the whole call's. `opts.initial_prompt` becomes Qwen's context (the system turn)."""
        forced = language_name(self.forced_language(opts), self.cfg.support_languages)
        context, start = opts.initial_prompt or "", time.perf_counter()
        audios = [np.asarray(a, dtype=np.float32) for a in audios]
        timings, stats = {"features": 0.0, "encoder": 0.0, "decoder": 0.0}, DecodeStats()
        plans = chunk_plans(self, audios, opts, opts.chunk_secs or CHUNK_SECS, 0.0, timings)
        jobs = [(f, c) for f, plan in enumerate(plans) for c in plan]
        pieces: dict[tuple[int, int], Piece | None] = {}
        for s in range(0, len(jobs), opts.batch_size):
            batch = [(f, c, c.samples(audios[f])) for f, c in jobs[s : s + opts.batch_size]]
            speech = [(f, c, a) for f, c, a in batch if a.size and np.abs(a).max() >= SILENCE_PEAK]
            for f, c, _ in batch:
                pieces[f, c.start] = None
            if speech:
                found = self.recognize([a for *_, a in speech], forced, context=context, timings=timings, stats=stats)
                pieces.update({(f, c.start): p for (f, c, _), p in zip(speech, found)})
            if progress is not None:
                progress(min(s + opts.batch_size, len(jobs)) / len(jobs))
        timings.update(prefill=stats.prefill_secs, decode_steps=stats.step_secs)
        first = None if stats.first_token_at is None else stats.first_token_at - start
        return [
            self._result(plan, [pieces[f, c.start] for c in plan], forced, timings, stats, first)
            for f, plan in enumerate(plans)
        ]

    def _result(self, plan, pieces: list[Piece | None], forced, timings, stats, first_token_secs):
        segments, names, looped = [], [], []
        for i, (chunk, piece) in enumerate(zip(plan, pieces)):
            if piece is None:
                continue
            if piece.generation.stopped == "repetition":
                looped.append(i)
            if piece.language:
                names.append(piece.language)
            if piece.text:
                conf = float(np.exp(np.mean(piece.generation.logprobs))) if piece.generation.logprobs else 0.0
                segments.append(
                    Segment(
                        start=round(chunk.start / self.sample_rate, 3),
                        end=round(chunk.end / self.sample_rate, 3),
                        text=" " + piece.text,
                        confidence=conf,
                        tokens=list(piece.generation.tokens),
                    )
                )
        language = language_code(forced or Counter(names).most_common(1)[0][0]) if (forced or names) else None
        return ModelOutput(
            segments,
            language,
            checkpoint_format=self.format,
            chunks=len(plan),
            first_token_latency_secs=first_token_secs,
            timings=dict(timings),
            extra={"chunk_languages": names, "repetition_stopped_chunks": looped, "decode_steps": stats.steps},
        )


def _generation_eos(directory) -> set[int]:
    eos = read_config(directory / "generation_config.json", optional=True).get("eos_token_id")
    return set() if eos is None else {int(e) for e in (eos if isinstance(eos, list) else [eos])}


def load_model(spec, path, B) -> Qwen3ASRModel:
    return Qwen3ASRModel(spec.id, load_checkpoint(path), B)
