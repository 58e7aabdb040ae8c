"""The plain data a transcription returns: `Word`, `Segment` and `TranscriptionResult`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Word:
    """One word with its place in the audio (seconds from the beginning of the file).

    text keeps openai-whisper's convention: a leading space where the word follows a space, and
    punctuation attached, so a segment's words joined give its text exactly.
    probability: in [0, 1]; mean probability of the word's tokens.
    speaker: "SPEAKER_00", ... with `TranscribeOptions(diarize=True)`, else None.
    """

    start: float
    end: float
    text: str
    probability: float
    speaker: str | None = None


@dataclass
class Segment:
    """A stretch of the transcript with its place in the audio.

    start, end: seconds from the beginning of the file.
    confidence: in [0, 1]; exp(mean token log-probability) for autoregressive models,
    mean frame posterior for CTC/TDT models.
    speaker: "SPEAKER_00", ... with `TranscribeOptions(diarize=True)`, else None.
    """

    start: float
    end: float
    text: str
    confidence: float
    tokens: list[int] = field(default_factory=list)
    speaker: str | None = None
    # Empty unless word timestamps were asked for; then "".join(w.text for w in words) == text.
    words: list[Word] = field(default_factory=list)


@dataclass
class TranscriptionResult:
    text: str
    segments: list[Segment]
    language: str | None
    model_name: str
    audio_duration_secs: float
    inference_time_secs: float
    rtf: float
    # Per-stage wall times (seconds): "load_audio", "features", "encoder", "decoder", ...
    timings: dict[str, float] = field(default_factory=dict)
    # The same keys for every model (checkpoint_format, chunks, language_probability,
    # first_token_latency_secs, device, dtype, kernels, quantize; see models/base.ModelOutput),
    # then what one family adds, e.g. Whisper's "temperature_fallbacks": 2.
    info: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)
