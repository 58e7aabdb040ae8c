"""`TranscribeOptions`: what a caller may ask of one transcription, validated up front."""

from __future__ import annotations

from dataclasses import dataclass

from polyasr.errors import InvalidOptionError

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
    best_of: candidates sampled at each temperature > 0; the most likely one is kept.
    chunk_secs: CTC/TDT models cut longer audio into chunks of at most this many seconds
        (None: the model's own default).
    batch_size: chunks (CTC/TDT models) decoded in one forward pass.
    word_timestamps: give every segment its words with start/end times (costs a second decoder
        pass per window for Whisper; little for CTC/TDT models).
    seed: seeds the sampler used at temperatures > 0, so fallbacks are reproducible.
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
    best_of: int = 5
    chunk_secs: float | None = None
    seed: int = 0
    batch_size: int = 1
    word_timestamps: bool = False

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
        if self.best_of < 1:
            raise InvalidOptionError(f"best_of must be >= 1, got {self.best_of}")
        if self.chunk_secs is not None and not self.chunk_secs > 2.0:
            raise InvalidOptionError(f"chunk_secs must be > 2 seconds, got {self.chunk_secs}")
        if self.batch_size < 1:
            raise InvalidOptionError(f"batch_size must be >= 1, got {self.batch_size}")
