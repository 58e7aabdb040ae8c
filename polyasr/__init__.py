"""polyasr: one API and one CLI over several speech-recognition models.

    from polyasr import AsrEngine, TranscribeOptions
    engine = AsrEngine.from_model("whisper-base", device="cpu")
    result = engine.transcribe_file("speech.wav", TranscribeOptions(language="en"))
    print(result.text, result.rtf)

Importing polyasr imports neither torch nor MLX; a backend is imported when a model is loaded.
A new model family implements `AsrModel` and declares a `Family` (see polyasr/models/base.py);
`register_family` makes its ids loadable.
"""

from polyasr.diarization import DiarizeOptions, SpeakerTurn, diarize
from polyasr.engine import AsrEngine
from polyasr.errors import (
    AsrError,
    AudioDecodeError,
    AudioError,
    AudioFileNotFoundError,
    BackendError,
    CheckpointError,
    EmptyAudioError,
    InvalidAudioError,
    InvalidOptionError,
    ModelError,
    ModelNotFoundError,
    ModelNotImplementedError,
    UnknownModelError,
    UnsupportedAudioFormatError,
    WeightsMismatchError,
)
from polyasr.host_memory import keep_freed_memory
from polyasr.models.base import AsrModel, Capabilities, CheckpointLayout, Family, ModelOutput
from polyasr.options import TranscribeOptions
from polyasr.registry import REGISTRY, ModelSpec, ModelType, register_family
from polyasr.result import Segment, TranscriptionResult, Word

__version__ = "0.1.0"

__all__ = [
    "AsrEngine",
    "TranscribeOptions",
    "TranscriptionResult",
    "Segment",
    "diarize",
    "DiarizeOptions",
    "SpeakerTurn",
    "Word",
    "ModelType",
    "ModelSpec",
    "REGISTRY",
    "AsrModel",
    "Capabilities",
    "ModelOutput",
    "Family",
    "CheckpointLayout",
    "register_family",
    "keep_freed_memory",
    "AsrError",
    "AudioError",
    "AudioFileNotFoundError",
    "UnsupportedAudioFormatError",
    "AudioDecodeError",
    "EmptyAudioError",
    "InvalidAudioError",
    "ModelError",
    "UnknownModelError",
    "ModelNotImplementedError",
    "ModelNotFoundError",
    "CheckpointError",
    "WeightsMismatchError",
    "BackendError",
    "InvalidOptionError",
]
