"""Output writers: a `TranscriptionResult` as plain text, JSON, SRT, WebVTT or a verbose report."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from polyasr.errors import InvalidOptionError
from polyasr.result import TranscriptionResult

FORMATS = ("text", "json", "srt", "vtt", "verbose")
EXTENSIONS = {"text": "txt", "json": "json", "srt": "srt", "vtt": "vtt", "verbose": "log"}


def format_result(result: TranscriptionResult, fmt: str) -> str:
    """Render `result` in output format `fmt` (one of FORMATS) as the text of a UTF-8 file."""
    writers = {"text": _text, "json": _json, "srt": _srt, "vtt": _vtt, "verbose": _verbose}
    if fmt not in writers:
        raise InvalidOptionError(f"unknown output format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    return writers[fmt](result)


def write_result(
    result: TranscriptionResult,
    fmt: str,
    dest: str | Path | None = None,
    audio_path: str | Path | None = None,
) -> Path | None:
    """Write `result` as `fmt` to stdout (dest None or "-"), to the file `dest`, or into the
    directory `dest` as `<audio_path stem>.<ext>` (ext: txt, json, srt, vtt, log).

    Returns the path written, or None for stdout. Files are UTF-8.
    """
    text = format_result(result, fmt)
    if dest is None or str(dest) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return None
    path = Path(dest)
    if path.is_dir():
        if audio_path is None:
            raise InvalidOptionError(f"{path} is a directory; pass audio_path so the output file can be named")
        path = path / f"{Path(audio_path).stem}.{EXTENSIONS[fmt]}"
    path.write_text(text, encoding="utf-8")
    return path


def _text(result: TranscriptionResult) -> str:
    if any(s.speaker for s in result.segments):  # diarized: one line per segment, WhisperX's prefix
        return "".join(f"{_speaker(s)}{' '.join(s.text.split())}\n" for s in result.segments if s.text.strip())
    return result.text.strip() + "\n"


def _speaker(segment) -> str:
    """The `[SPEAKER_00]: ` prefix WhisperX writes before a diarized segment's text, or ""."""
    return f"[{segment.speaker}]: " if segment.speaker else ""


def _json(result: TranscriptionResult) -> str:
    # Key order is the dataclass field order, so diffs between runs stay readable.
    # default=str keeps a decoder's free-form `info` values (e.g. a Path) from failing the write.
    return json.dumps(result.to_dict(), ensure_ascii=False, indent=2, default=str) + "\n"


def _srt(result: TranscriptionResult) -> str:
    blocks = [
        f"{i}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{text}\n"
        for i, (start, end, text) in enumerate(_cues(result), start=1)
    ]
    return "\n".join(blocks)


def _vtt(result: TranscriptionResult) -> str:
    blocks = [f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{text}\n" for start, end, text in _cues(result)]
    return "\n".join(["WEBVTT\n", *blocks])


def _cues(result: TranscriptionResult) -> list[tuple[float, float, str]]:
    """Segments as (start s, end s, one-line text) cues that subtitle players accept.

    Decoders can emit times past the end of the audio (Whisper predicts timestamps inside a
    zero-padded 30 s window) and can step backwards where windows overlap; players drop or
    reorder such cues. So times are clamped to [0, audio duration], each start is at least the
    previous start, and each end at least its start. Empty segments would be blank cues: skipped.
    """
    # An unknown (zero) duration must not squash every cue to 0:00.
    limit = result.audio_duration_secs if result.audio_duration_secs > 0 else math.inf
    cues, previous_start = [], 0.0
    for seg in result.segments:
        # A blank line ends an SRT cue and "-->" starts a VTT timing line: keep text on one line.
        text = " ".join(seg.text.split()).replace("-->", "->")
        if not text:
            continue
        text = _speaker(seg) + text
        start = min(max(seg.start, previous_start), limit)
        end = min(max(seg.end, start), limit)
        cues.append((start, end, text))
        previous_start = start
    return cues


def _timestamp(seconds: float, ms_sep: str) -> str:
    """Seconds -> "HH:MM:SS<ms_sep>mmm" (SRT uses ",", WebVTT and the verbose report ".")."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{ms_sep}{ms:03d}"


def _verbose(result: TranscriptionResult) -> str:
    """A human report: the segments as the decoder produced them (not clamped), then the run's numbers."""
    lines = [
        f"[{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}] (conf {s.confidence:.2f}) "
        f"{_speaker(s)}{s.text.strip()}"
        for s in result.segments
    ]
    lines += [
        f"model: {result.model_name}",
        f"language: {result.language or 'unknown'}",
        f"audio duration: {result.audio_duration_secs:.2f} s",
        f"inference time: {result.inference_time_secs:.2f} s",
        f"RTF: {result.rtf:.4f}",
    ]
    lines += [f"timing {stage}: {secs:.3f} s" for stage, secs in result.timings.items()]
    lines += [f"info {key}: {value}" for key, value in result.info.items()]
    return "\n".join(lines) + "\n"
