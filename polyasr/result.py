"""The plain data a transcription returns: `Segment` and `TranscriptionResult`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Segment:
    """A stretch of the transcript with its place in the audio.

    start, end: seconds from the beginning of the file.
    confidence: in [0, 1]; exp(mean token log-probability) for autoregressive models,
    mean frame posterior for CTC/TDT models.
    """

    start: float
    end: float
    text: str
    confidence: float
    tokens: list[int] = field(default_factory=list)


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
    # Free-form flags a decoder raises, e.g. "temperature_fallback": 2.
    info: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)
