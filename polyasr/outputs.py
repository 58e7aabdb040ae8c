"""Output writers: a `TranscriptionResult` as plain text, JSON, SRT, WebVTT or a verbose report."""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from polyasr.errors import InvalidOptionError
from polyasr.result import TranscriptionResult

FORMATS = ("text", "json", "srt", "vtt", "verbose")
EXTENSIONS = {"text": "txt", "json": "json", "srt": "srt", "vtt": "vtt", "verbose": "log"}


@dataclass(frozen=True)
class SubtitleOptions:
    """How SRT/VTT cues are cut from words (openai-whisper's subtitle options); all need words.

    max_line_width: characters in a line before it wraps (with max_line_count, cues no longer
        follow segments: a cue fills up to max_line_count lines, and a pause over 3 s ends it).
    max_line_count: lines in one cue (only with max_line_width).
    max_words_per_line: words in one line.
    highlight_words: one cue per word, the word spoken underlined.
    """

    max_line_width: int | None = None
    max_line_count: int | None = None
    max_words_per_line: int | None = None
    highlight_words: bool = False

    def __post_init__(self):
        for name in ("max_line_width", "max_line_count", "max_words_per_line"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidOptionError(f"--{name.replace('_', '-')} must be >= 1, got {value}")

    @property
    def by_words(self) -> bool:
        return self != SubtitleOptions()

    def check(self, word_timestamps: bool) -> None:
        """Refuse word-based subtitle options for a run that gives no words."""
        if self.by_words and not word_timestamps:
            used = [f"--{k.replace('_', '-')}" for k, v in vars(self).items() if v not in (None, False)]
            raise InvalidOptionError(f"{', '.join(used)} cut subtitles by words: add --word-timestamps")


def format_result(result: TranscriptionResult, fmt: str, subtitles: SubtitleOptions | None = None) -> str:
    """Render `result` in output format `fmt` (one of FORMATS) as the text of a UTF-8 file;
    `subtitles` shapes SRT/VTT cues from the segments' words."""
    writers = {"text": _text, "json": _json, "srt": _srt, "vtt": _vtt, "verbose": _verbose}
    if fmt not in writers:
        raise InvalidOptionError(f"unknown output format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fmt in ("srt", "vtt"):
        return writers[fmt](result, subtitles or SubtitleOptions())
    return writers[fmt](result)


def write_result(
    result: TranscriptionResult,
    fmt: str,
    dest: str | Path | None = None,
    audio_path: str | Path | None = None,
    subtitles: SubtitleOptions | None = None,
) -> Path | None:
    """Write `result` as `fmt` to stdout (dest None or "-"), to the file `dest`, or into the
    directory `dest` as `<audio_path stem>.<ext>` (ext: txt, json, srt, vtt, log).

    Returns the path written, or None for stdout. Files are UTF-8.
    """
    text = format_result(result, fmt, subtitles)
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


def _srt(result: TranscriptionResult, subtitles: SubtitleOptions) -> str:
    cues = _word_cues(result, subtitles) if subtitles.by_words else _cues(result)
    blocks = [
        f"{i}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{text}\n"
        for i, (start, end, text) in enumerate(cues, start=1)
    ]
    return "\n".join(blocks)


def _vtt(result: TranscriptionResult, subtitles: SubtitleOptions) -> str:
    cues = _word_cues(result, subtitles) if subtitles.by_words else _cues(result)
    blocks = [f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{text}\n" for start, end, text in cues]
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


def _word_cues(result: TranscriptionResult, opts: SubtitleOptions) -> list[tuple[float, float, str]]:
    """Cues cut from words: each as (start, end, text), or one cue per word with it underlined."""
    cues = []
    for lines in _subtitles(result.segments, opts):
        text = "".join(w for _, _, w in lines).replace("-->", "->")
        if not opts.highlight_words:
            cues.append((lines[0][0], lines[-1][1], text))
            continue
        words, last = [w for _, _, w in lines], lines[0][0]
        for i, (start, end, _) in enumerate(lines):
            if start > last:  # the gap before a word shows the cue without a highlight
                cues.append((last, start, text))
            marked = [
                re.sub(r"^(\s*)(.*)$", r"\1<u>\2</u>", w, flags=re.S) if j == i else w for j, w in enumerate(words)
            ]
            cues.append((start, end, "".join(marked).replace("-->", "->")))
            last = end
    return cues


def _subtitles(segments, opts: SubtitleOptions):
    """Yield cues as lists of (start, end, word text); a word that opens a line loses its leading
    space, and one that opens a later line of a cue starts with a newline.

    Without both max_line_width and max_line_count every segment, or every max_words_per_line
    words of it, is a cue of its own (wrapped at max_line_width); with both, cues run across
    segments up to max_line_count lines, and a pause over 3 s ends one.
    """
    keep_segments = opts.max_line_count is None or opts.max_line_width is None
    width, per_cue = opts.max_line_width or 1000, opts.max_words_per_line or 1000
    cue, line_len, line_count = [], 0, 1
    last = segments[0].words[0].start if segments and segments[0].words else 0.0
    for seg in segments:
        for i, w in enumerate(seg.words):
            text = w.text
            pause = not keep_segments and w.start - last > 3.0
            cue_break = keep_segments and i % per_cue == 0 and bool(cue)
            if line_len > 0 and line_len + len(text) <= width and not pause and not cue_break:
                line_len += len(text)
            else:
                text = text.strip()
                full = opts.max_line_count is not None and (pause or line_count >= opts.max_line_count)
                if cue_break or (cue and full):
                    yield cue
                    cue, line_count = [], 1
                elif line_len > 0:
                    line_count += 1
                    text = "\n" + text
                line_len = len(text.strip())
            cue.append((w.start, w.end, text))
            last = w.start
    if cue:
        yield cue


def _timestamp(seconds: float, ms_sep: str) -> str:
    """Seconds -> "HH:MM:SS<ms_sep>mmm" (SRT uses ",", WebVTT and the verbose report ".")."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{ms_sep}{ms:03d}"


def _verbose(result: TranscriptionResult) -> str:
    """A human report: the segments as the decoder produced them (not clamped), then the run's numbers."""
    lines = []
    for s in result.segments:
        lines.append(
            f"[{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}] (conf {s.confidence:.2f}) "
            f"{_speaker(s)}{s.text.strip()}"
        )
        lines += [
            f"    [{_timestamp(w.start, '.')} --> {_timestamp(w.end, '.')}] (p {w.probability:.2f}) {w.text.strip()}"
            for w in s.words
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
