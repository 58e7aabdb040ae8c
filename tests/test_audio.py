"""polyasr.audio: every fixture format loads to 16 kHz mono float32, arrays are normalised the
same way, and every bad input raises its own AudioError subclass naming the file and the reason."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from polyasr.audio import SAMPLE_RATE, audio_duration, load_audio, validate_samples
from polyasr.errors import (
    AudioDecodeError,
    AudioFileNotFoundError,
    EmptyAudioError,
    InvalidAudioError,
    UnsupportedAudioFormatError,
)

FIXTURES = Path(__file__).parent / "fixtures"
# MP3 frames hold 1152 samples and LAME adds encoder delay and padding, so an MP3 is
# up to a frame or two longer than its source; the other formats are sample-exact.
LENGTH_TOLERANCE_S = {"mp3": 0.15}


def _sine(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def _envelope(x: np.ndarray, hop: int = 160) -> np.ndarray:
    """Mean |x| per 10 ms frame: (N,) -> (N // hop,)."""
    n = len(x) - len(x) % hop
    return np.abs(x[:n]).reshape(-1, hop).mean(axis=1)


def _envelope_similarity(x: np.ndarray, reference: np.ndarray, max_lag: int = 20) -> float:
    """Best correlation of 10 ms envelopes over lags of 0..max_lag frames.

    libsndfile does not drop an MP3's encoder delay (~70 ms for LAME), so x may start late.
    """
    env_x, env_ref = _envelope(x), _envelope(reference)
    n = min(len(env_x) - max_lag, len(env_ref))
    return max(float(np.corrcoef(env_x[lag : lag + n], env_ref[:n])[0, 1]) for lag in range(max_lag + 1))


def _assert_mono16k(x: np.ndarray) -> None:
    assert x.ndim == 1 and x.dtype == np.float32 and x.flags.c_contiguous


@pytest.mark.parametrize(
    "name",
    ["en_short.wav", "en_medium.wav", "en_long.wav", "ru_short.wav", "silence.wav"],
)
def test_fixture_wavs_load_at_their_length(name):
    path = FIXTURES / name
    x = load_audio(path)
    _assert_mono16k(x)
    assert len(x) == sf.info(str(path)).frames  # already 16 kHz: no resampling, no lost samples
    assert 0.0 <= np.abs(x).max() <= 1.0


def test_silence_is_valid_audio():
    x = load_audio(FIXTURES / "silence.wav")
    assert audio_duration(x) == pytest.approx(5.0)
    assert not x.any()


@pytest.mark.parametrize("name", ["en_short_stereo_44k.flac", "en_short.ogg", "en_short.mp3"])
def test_other_formats_match_the_wav(name):
    reference = load_audio(FIXTURES / "en_short.wav")
    x = load_audio(FIXTURES / name)
    _assert_mono16k(x)
    tolerance = LENGTH_TOLERANCE_S.get(name.rsplit(".", 1)[1], 0.01)
    assert audio_duration(x) == pytest.approx(audio_duration(reference), abs=tolerance)
    # Lossy codecs change the waveform, but the loudness envelope must still follow the speech.
    assert _envelope_similarity(x, reference) > 0.9


def test_stereo_flac_is_downmixed_by_mean():
    # The fixture's right channel is the left at half gain, so the mean is 0.75 x the speech;
    # taking one channel would give 1.0 or 0.5, summing 1.5.
    reference = load_audio(FIXTURES / "en_short.wav")
    x = load_audio(FIXTURES / "en_short_stereo_44k.flac")
    n = min(len(x), len(reference))
    gain = float(np.dot(x[:n], reference[:n]) / np.dot(reference[:n], reference[:n]))
    assert gain == pytest.approx(0.75, abs=0.02)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_keeps_a_sine_at_its_frequency(tmp_path, rate):
    path = tmp_path / f"sine_{rate}.wav"
    sf.write(str(path), _sine(440.0, rate), rate, subtype="PCM_16")
    x = load_audio(path)
    _assert_mono16k(x)
    assert len(x) == pytest.approx(SAMPLE_RATE, abs=2)
    assert _peak_hz(x, SAMPLE_RATE) == pytest.approx(440.0, abs=1.0)
    assert np.abs(x).max() == pytest.approx(0.5, abs=0.02)


def test_load_audio_to_another_rate(tmp_path):
    path = tmp_path / "sine.wav"
    sf.write(str(path), _sine(440.0, SAMPLE_RATE), SAMPLE_RATE)
    x = load_audio(path, sample_rate=8000)
    assert len(x) == pytest.approx(8000, abs=2)
    assert _peak_hz(x, 8000) == pytest.approx(440.0, abs=1.0)


def test_float_and_int32_wavs_load(tmp_path):
    sine = _sine(300.0, SAMPLE_RATE)
    for subtype in ("FLOAT", "PCM_32", "PCM_24", "PCM_U8"):
        path = tmp_path / f"{subtype}.wav"
        sf.write(str(path), sine, SAMPLE_RATE, subtype=subtype)
        np.testing.assert_allclose(load_audio(path), sine, atol=0.01)


def test_validate_samples_int16():
    sine = _sine(440.0, SAMPLE_RATE)
    pcm = np.round(sine * 32767).astype(np.int16)
    x = validate_samples(pcm)
    _assert_mono16k(x)
    np.testing.assert_allclose(x, sine, atol=1e-4)


@pytest.mark.parametrize(
    "dtype, scale, offset", [(np.int32, 2**31 - 1, 0), (np.uint8, 127, 128), (np.int8, 127, 0), (np.float64, 1, 0)]
)
def test_validate_samples_other_dtypes(dtype, scale, offset):
    sine = _sine(440.0, SAMPLE_RATE)
    pcm = sine * scale + offset
    pcm = (np.round(pcm) if np.dtype(dtype).kind in "iu" else pcm).astype(dtype)
    np.testing.assert_allclose(validate_samples(pcm), sine, atol=0.01)


def test_validate_samples_downmixes_both_layouts():
    left, right = _sine(440.0, SAMPLE_RATE), _sine(440.0, SAMPLE_RATE, amplitude=0.1)
    expected = (left + right) / 2
    np.testing.assert_allclose(validate_samples(np.stack([left, right], axis=1)), expected, atol=1e-6)  # (N, C)
    np.testing.assert_allclose(validate_samples(np.stack([left, right], axis=0)), expected, atol=1e-6)  # (C, N)


def test_validate_samples_resamples():
    x = validate_samples(_sine(440.0, 48000), source_rate=48000)
    assert len(x) == pytest.approx(SAMPLE_RATE, abs=2)
    assert _peak_hz(x, SAMPLE_RATE) == pytest.approx(440.0, abs=1.0)


def test_audio_duration():
    assert audio_duration(np.zeros(24000, np.float32)) == pytest.approx(1.5)
    assert audio_duration(np.zeros(8000, np.float32), sample_rate=8000) == pytest.approx(1.0)


def test_streamed_wav_with_placeholder_size_loads(tmp_path):
    # Streaming writers (ffmpeg to a pipe) leave the data size at 0xFFFFFFFF; that is not truncation.
    path = tmp_path / "streamed.wav"
    sf.write(str(path), _sine(440.0, SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    at = raw.find(b"data") + 4
    raw[at : at + 4] = struct.pack("<I", 0xFFFFFFFF)
    path.write_bytes(bytes(raw))
    assert len(load_audio(path)) == SAMPLE_RATE


# --- bad input: each case names the file and a word of the reason --------------------------


def _write_truncated_wav(path: Path) -> None:
    sf.write(str(path), _sine(440.0, SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:2000])  # header intact, ~94 % of the data gone


def _write_headerless_wav(path: Path) -> None:
    sf.write(str(path), _sine(440.0, SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:30])  # cut inside the fmt chunk: no data chunk at all


def _write_truncated_flac(path: Path) -> None:
    path.write_bytes((FIXTURES / "en_short_stereo_44k.flac").read_bytes()[:20000])


def _write_text_as_wav(path: Path) -> None:
    path.write_text("this is a text file, not audio\n" * 20)


def _write_fake_m4a(path: Path) -> None:
    # An MP4/M4A container (AAC), which libsndfile does not read.
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00M4A mp42isom" + bytes(4000))


def _write_empty_wav(path: Path) -> None:
    sf.write(str(path), np.zeros(0, np.float32), SAMPLE_RATE)


def _write_nan_wav(path: Path) -> None:
    x = _sine(440.0, SAMPLE_RATE)
    x[100] = np.nan
    sf.write(str(path), x, SAMPLE_RATE, subtype="FLOAT")


def _write_inf_wav(path: Path) -> None:
    x = _sine(440.0, SAMPLE_RATE)
    x[-1] = np.inf
    sf.write(str(path), x, SAMPLE_RATE, subtype="DOUBLE")


@pytest.mark.parametrize(
    "file_name, make, error, reason",
    [
        ("truncated.wav", _write_truncated_wav, AudioDecodeError, "truncated"),
        ("headless.wav", _write_headerless_wav, AudioDecodeError, "corrupt"),
        ("truncated.flac", _write_truncated_flac, AudioDecodeError, "corrupt"),
        ("notes.wav", _write_text_as_wav, UnsupportedAudioFormatError, "format"),
        ("song.m4a", _write_fake_m4a, UnsupportedAudioFormatError, "format"),
        ("empty.wav", _write_empty_wav, EmptyAudioError, "no audio"),
        ("nan.wav", _write_nan_wav, InvalidAudioError, "NaN"),
        ("inf.wav", _write_inf_wav, InvalidAudioError, "infinite"),
    ],
)
def test_bad_files(tmp_path, file_name, make, error, reason):
    path = tmp_path / file_name
    make(path)
    with pytest.raises(error) as info:
        load_audio(path)
    assert type(info.value) is error
    assert file_name in str(info.value) and reason in str(info.value)


def test_unsupported_format_lists_the_supported_ones(tmp_path):
    path = tmp_path / "notes.wav"
    _write_text_as_wav(path)
    with pytest.raises(UnsupportedAudioFormatError, match="WAV, FLAC, OGG/Vorbis, MP3"):
        load_audio(path)


def test_missing_file(tmp_path):
    with pytest.raises(AudioFileNotFoundError) as info:
        load_audio(tmp_path / "nowhere.wav")
    assert type(info.value) is AudioFileNotFoundError
    assert "nowhere.wav" in str(info.value) and "no such file" in str(info.value)


def test_directory(tmp_path):
    folder = tmp_path / "recordings"
    folder.mkdir()
    with pytest.raises(AudioFileNotFoundError) as info:
        load_audio(folder)
    assert type(info.value) is AudioFileNotFoundError
    assert "recordings" in str(info.value) and "directory" in str(info.value)


@pytest.mark.parametrize(
    "samples, error, reason",
    [
        (np.zeros(0, np.float32), EmptyAudioError, "no audio"),
        (np.zeros((2, 0), np.float32), EmptyAudioError, "no audio"),
        (np.array([0.0, np.nan, 0.1], np.float32), InvalidAudioError, "NaN"),
        (np.zeros((2, 3, 4), np.float32), InvalidAudioError, "shape"),
        (np.zeros(10, np.int64), InvalidAudioError, "dtype"),
        (np.zeros(10, bool), InvalidAudioError, "dtype"),
    ],
)
def test_bad_arrays(samples, error, reason):
    with pytest.raises(error) as info:
        validate_samples(samples, name="microphone")
    assert type(info.value) is error
    assert "microphone" in str(info.value) and reason in str(info.value)
