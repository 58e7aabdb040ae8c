"""Audio in: files or arrays -> float32 mono samples at the models' 16 kHz.

Every model polyasr runs was trained on 16 kHz mono audio, so everything is brought to that
once, here, before any feature extraction. Decoding is libsndfile (through `soundfile`),
which reads WAV, FLAC, Ogg Vorbis/Opus and MP3 without ffmpeg; resampling is libsoxr.
No torch import: the CLI can reject a bad file before it pays for loading a model.
"""

from __future__ import annotations

import os
import struct

import numpy as np
import soundfile as sf
import soxr

from polyasr.errors import (
    AudioDecodeError,
    AudioFileNotFoundError,
    EmptyAudioError,
    InvalidAudioError,
    InvalidOptionError,
    UnsupportedAudioFormatError,
)

SAMPLE_RATE = 16000
SUPPORTED_FORMATS = ("WAV", "FLAC", "OGG/Vorbis", "MP3")
# A (C, N) array is told from an (N, C) one by this: more channels than this is not audio
# anyone records, while a first dimension this small is too short to be the time axis.
MAX_CHANNELS_FIRST = 8

# libsndfile error codes (sndfile.h) that mean "not a file I can read" rather than "corrupt".
_SF_ERR_UNRECOGNISED_FORMAT = 1
_SF_ERR_SYSTEM = 2
_SF_ERR_UNSUPPORTED_ENCODING = 4
_CONVERT_HINT = "convert it, e.g. `ffmpeg -i INPUT -ar 16000 -ac 1 OUTPUT.wav`"


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode an audio file to mono float32 at `sample_rate`.

    Returns: (N,) float32, C-contiguous, nominally in [-1, 1]; N = duration * sample_rate.
    Any channel count is averaged to mono; any file rate is resampled (soxr "HQ").
    Raises an `AudioError` subclass naming the file: not found, unsupported format,
    corrupt/truncated, empty, or NaN/Inf samples. Digital silence is valid.
    """
    name = os.fspath(path)
    if not os.path.exists(name):
        raise AudioFileNotFoundError(name, "no such file; check the path")
    if os.path.isdir(name):
        raise AudioFileNotFoundError(name, "is a directory, not an audio file; pass one file")
    if not os.path.isfile(name):
        raise AudioFileNotFoundError(name, "is not a regular file (a device or pipe?); pass an audio file")
    data, rate = _decode(name)
    # Mean, not the first channel: a stereo interview often has one speaker per side. A mono file's
    # one channel is a view (an hour of samples is 230 MB: no second copy of it).
    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    return _finish(mono, name, sample_rate, rate)


def check_audio_file(path: str | os.PathLike) -> None:
    """Fail fast on a path that cannot be audio: missing, a directory, or a header libsndfile rejects.

    Reads only the header, so a batch job reports a bad input before it pays for loading a model.
    """
    name = os.fspath(path)
    if not os.path.exists(name):
        raise AudioFileNotFoundError(name, "no such file; check the path")
    if not os.path.isfile(name):
        raise AudioFileNotFoundError(name, "is not a regular file; pass an audio file")
    try:
        sf.info(name)
    except sf.LibsndfileError as e:
        raise _classify_sf_error(name, e) from e
    except sf.SoundFileRuntimeError as e:
        raise AudioDecodeError(name, f"could not be decoded ({e}); the file may be corrupt") from e


def validate_samples(
    samples,
    name: str | None = None,
    sample_rate: int = SAMPLE_RATE,
    source_rate: int | None = None,
) -> np.ndarray:
    """Check and normalise caller-supplied samples the way `load_audio` does a file.

    samples: array-like, either
      (N,)   mono;
      (N, C) channels-last, as soundfile returns;
      (C, N) channels-first, as torchaudio/librosa return — assumed only when
             C <= 8 < N (MAX_CHANNELS_FIRST), otherwise the array is read as (N, C).
    dtype: float16/32/64 taken as is; int8/int16/int32 PCM scaled by 2**(bits-1) to [-1, 1);
      uint8 PCM centred on 128 then scaled.
    source_rate: the rate of `samples` in Hz; None means it is already `sample_rate`.
    name: used in error messages in place of a file name.
    Returns: (N',) float32 C-contiguous mono at `sample_rate`.
    """
    x = _to_float(np.asarray(samples), name)
    x = _to_mono(x, name)
    return _finish(x, name, sample_rate, source_rate or sample_rate)


def audio_duration(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Duration in seconds of (N,) mono samples at `sample_rate` Hz."""
    return len(samples) / float(sample_rate)


def _decode(name: str) -> tuple[np.ndarray, int]:
    """Read a whole file with libsndfile -> ((N, C) float32, rate in Hz)."""
    try:
        with sf.SoundFile(name) as f:
            data = f.read(dtype="float32", always_2d=True)
            rate, fmt = f.samplerate, f.format
    except sf.LibsndfileError as e:
        raise _classify_sf_error(name, e) from e
    except sf.SoundFileRuntimeError as e:
        raise AudioDecodeError(name, f"could not be decoded ({e}); the file may be corrupt") from e
    if fmt == "WAV":
        _check_wav_complete(name)
    return data, rate


def _classify_sf_error(name: str, e: sf.LibsndfileError) -> UnsupportedAudioFormatError | AudioDecodeError:
    """Turn a libsndfile failure into the AudioError a user can act on."""
    if e.code == _SF_ERR_UNRECOGNISED_FORMAT:
        supported = ", ".join(SUPPORTED_FORMATS)
        return UnsupportedAudioFormatError(
            name, f"not a recognised audio format (supported: {supported}); {_CONVERT_HINT}"
        )
    if e.code == _SF_ERR_UNSUPPORTED_ENCODING:
        return UnsupportedAudioFormatError(name, f"audio encoding not supported ({e.error_string}); {_CONVERT_HINT}")
    if e.code == _SF_ERR_SYSTEM:
        return AudioDecodeError(name, f"could not be read ({e.error_string}); check the file's permissions")
    return AudioDecodeError(
        name, f"could not be decoded ({e.error_string}); the file is corrupt or truncated, re-export or re-download it"
    )


def _check_wav_complete(name: str) -> None:
    """Raise AudioDecodeError if a WAV's data chunk is cut short of what its header declares.

    libsndfile silently returns whatever samples are present, so a copy that was cut off
    would be transcribed as if the speech simply stopped; we would rather say so.
    """
    declared, present = _wav_data_sizes(name)
    # Writers that get the size a few bytes wrong are common and their audio is whole;
    # a cut-off copy loses far more than 1 %.
    if declared and present < 0.99 * declared:
        missing = 100.0 * (declared - present) / declared
        raise AudioDecodeError(
            name,
            f"WAV file is truncated: {missing:.0f}% of the audio data its header declares is missing; "
            "it was cut off while being written or copied, re-export or re-download it",
        )


def _wav_data_sizes(name: str) -> tuple[int, int]:
    """(bytes the 'data' chunk declares, bytes actually present) of a RIFF/WAVE file.

    (0, 0) when the file is not plain RIFF, has no data chunk, or declares a placeholder
    size: streaming writers put 0 or 0x7FFFFFFF/0xFFFFFFFF before they know the length.
    """
    size = os.path.getsize(name)
    with open(name, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0, 0
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_len = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                if chunk_len == 0 or chunk_len >= 0x7FFFFFFF:
                    return 0, 0
                return chunk_len, min(chunk_len, size - pos - 8)
            pos += 8 + chunk_len + (chunk_len & 1)  # RIFF chunks are padded to even length
    return 0, 0


def _to_float(x: np.ndarray, name: str | None) -> np.ndarray:
    """PCM of any supported dtype -> float32 in [-1, 1)."""
    if x.dtype.kind == "f":
        return x.astype(np.float32, copy=False)
    if x.dtype.kind == "i" and x.dtype.itemsize in (1, 2, 4):
        return x.astype(np.float32) / np.float32(2 ** (8 * x.dtype.itemsize - 1))
    if x.dtype == np.uint8:
        return (x.astype(np.float32) - np.float32(128)) / np.float32(128)
    raise InvalidAudioError(
        name, f"samples of dtype {x.dtype} are not audio; pass float32 in [-1, 1] or int16/int32/uint8 PCM"
    )


def _to_mono(x: np.ndarray, name: str | None) -> np.ndarray:
    """(N,), (N, C) or (C, N) -> (N,) by averaging channels; see `validate_samples` for the rule."""
    if x.ndim == 1 or x.size == 0:
        return x.reshape(-1)  # an empty (N, 0) must reach the empty check, not average to NaN
    if x.ndim != 2:
        raise InvalidAudioError(name, f"samples must be 1-D (N,) or 2-D (N, channels), got shape {x.shape}")
    channels_first = x.shape[0] <= MAX_CHANNELS_FIRST < x.shape[1]
    return x.mean(axis=1 if not channels_first else 0, dtype=np.float32)


def _finish(x: np.ndarray, name: str | None, sample_rate: int, source_rate: int) -> np.ndarray:
    """Reject empty / non-finite mono samples, resample to `sample_rate`, make contiguous."""
    if sample_rate <= 0:
        raise InvalidOptionError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    if source_rate <= 0:
        raise InvalidAudioError(name, f"source sample rate must be a positive number of Hz, got {source_rate}")
    if x.size == 0:
        raise EmptyAudioError(name, "contains no audio samples (zero length); record or export it again")
    if not _all_finite(x):
        raise InvalidAudioError(
            name, "contains NaN or infinite samples; the file is damaged or was written from broken float data"
        )
    x = np.ascontiguousarray(x, dtype=np.float32)
    if source_rate != sample_rate:
        x = soxr.resample(x, source_rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(x, dtype=np.float32)


def _all_finite(x: np.ndarray, block: int = 1 << 20) -> bool:
    """np.isfinite(x).all() a block at a time: no mask as long as the file."""
    return all(np.isfinite(x[i : i + block]).all() for i in range(0, len(x), block))


def pad_batch(audios) -> tuple[np.ndarray, np.ndarray]:
    """Signals of different lengths -> (B, max length) float32 zero-padded at the end, lengths (B,) int64."""
    lengths = np.array([len(a) for a in audios], dtype=np.int64)
    batch = np.zeros((len(audios), int(lengths.max(initial=0))), dtype=np.float32)
    for i, a in enumerate(audios):
        batch[i, : len(a)] = a
    return batch, lengths
