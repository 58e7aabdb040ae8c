"""Every error a user can cause is an `AsrError` subclass whose message says what to do.

The CLI prints `str(error)` on one line and exits with `error.exit_code`; library users
catch `AsrError` (or a subclass) without parsing messages.
"""

from __future__ import annotations


class AsrError(Exception):
    """Base class of every error polyasr raises on purpose."""

    exit_code = 1


class AudioError(AsrError):
    """The audio given cannot be transcribed (base class; carries the file name)."""

    exit_code = 3

    def __init__(self, path: str | None, reason: str):
        self.path = path
        self.reason = reason
        where = f"{path}: " if path else ""
        super().__init__(f"{where}{reason}")


class AudioFileNotFoundError(AudioError):
    """The audio path does not exist or is not a file."""


class UnsupportedAudioFormatError(AudioError):
    """The file exists but is not in a format polyasr can decode."""


class AudioDecodeError(AudioError):
    """The file claims a supported format but its content is corrupt or truncated."""


class EmptyAudioError(AudioError):
    """The file decodes to zero samples."""


class InvalidAudioError(AudioError):
    """The samples are unusable (NaN/Inf, wrong shape or dtype)."""


class ModelError(AsrError):
    """Base class of errors about a model id, a checkpoint or its weights."""

    exit_code = 4


class UnknownModelError(ModelError):
    """The model id is not in the registry."""


class ModelNotImplementedError(ModelError):
    """The model is registered but its implementation has not landed yet."""


class ModelNotFoundError(ModelError):
    """No checkpoint for the model could be found where we looked."""


class CheckpointError(ModelError):
    """A checkpoint exists but is not one this model can load (wrong format, missing files)."""


class WeightsMismatchError(CheckpointError):
    """Tensors are missing, unexpected, or of the wrong shape for the model's config."""


class BackendError(AsrError):
    """The requested device / backend is not available on this machine."""

    exit_code = 5


class InvalidOptionError(AsrError):
    """An option value is out of range or contradicts another option."""

    exit_code = 2
