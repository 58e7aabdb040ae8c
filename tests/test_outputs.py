"""polyasr.outputs: each format is written, parsed back, and checked for what players and
readers rely on: monotonic timestamps inside the audio, texts preserved, JSON round-trips."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from polyasr.errors import InvalidOptionError
from polyasr.outputs import EXTENSIONS, FORMATS, format_result, write_result
from polyasr.result import Segment, TranscriptionResult

DURATION = 10.0
TIMING = re.compile(r"^(\d\d):(\d\d):(\d\d)([,.])(\d\d\d) --> (\d\d):(\d\d):(\d\d)([,.])(\d\d\d)$")


@pytest.fixture
def result() -> TranscriptionResult:
    segments = [
        Segment(-0.3, 2.5, " Hello there.", 0.93, [1, 2]),  # starts before the audio
        Segment(2.4, 5.0, "How are you?", 0.88),
        Segment(4.0, 3.5, "The end comes before the start.", 0.7),
        Segment(3.0, 6.0, "This one starts before the previous one.", 0.6),  # non-monotonic
        Segment(6.5, 7.0, "   ", 0.1),  # empty: no cue
        Segment(7.0, 8.0, "Привет, мир.", 0.9),
        Segment(8.5, 9.0, "two\n\nlines --> one", 0.8),  # a blank line or an arrow would break a cue
        Segment(9.0, 12.5, "This runs past the end.", 0.5),  # out of range
    ]
    return TranscriptionResult(
        text=" ".join(s.text.strip() for s in segments),
        segments=segments,
        language="en",
        model_name="whisper-tiny.en",
        audio_duration_secs=DURATION,
        inference_time_secs=0.5,
        rtf=0.05,
        timings={"load_audio": 0.01, "encoder": 0.2},
        info={"temperature_fallback": 2},
    )


def _expected_texts(result: TranscriptionResult) -> list[str]:
    texts = [" ".join(s.text.split()) for s in result.segments]
    return [t.replace("-->", "->") for t in texts if t]


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def _parse_cues(blocks: list[str], sep: str, numbered: bool) -> list[tuple[float, float, str]]:
    """Cue blocks -> (start s, end s, text); checks the index line and the timestamp separator."""
    cues = []
    for number, block in enumerate(blocks, start=1):
        lines = block.split("\n")
        if numbered:
            assert lines.pop(0) == str(number)
        match = TIMING.match(lines[0])
        assert match, lines[0]
        g = match.groups()
        assert g[3] == sep and g[8] == sep
        cues.append((_seconds(*g[0:3], g[4]), _seconds(*g[5:8], g[9]), "\n".join(lines[1:])))
    return cues


def parse_srt(text: str) -> list[tuple[float, float, str]]:
    return _parse_cues([b for b in text.strip("\n").split("\n\n") if b], ",", numbered=True)


def parse_vtt(text: str) -> list[tuple[float, float, str]]:
    header, *blocks = text.strip("\n").split("\n\n")
    assert header == "WEBVTT"
    return _parse_cues(blocks, ".", numbered=False)


def _assert_playable(cues: list[tuple[float, float, str]], result: TranscriptionResult) -> None:
    assert [text for _, _, text in cues] == _expected_texts(result)
    starts = [start for start, _, _ in cues]
    assert starts == sorted(starts)
    for start, end, _ in cues:
        assert 0.0 <= start <= end <= DURATION


@pytest.mark.parametrize("fmt, parse", [("srt", parse_srt), ("vtt", parse_vtt)])
def test_subtitles_parse_back(tmp_path, result, fmt, parse):
    path = write_result(result, fmt, tmp_path / f"out.{fmt}")
    cues = parse(path.read_text(encoding="utf-8"))
    _assert_playable(cues, result)
    assert cues[0][:2] == (0.0, 2.5)
    assert cues[-1][:2] == (9.0, DURATION)


def test_srt_timestamp_format(result):
    srt = format_result(result, "srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n")
    assert "\n00:00:09,000 --> 00:00:10,000\nThis runs past the end.\n" in srt


def test_timestamps_past_an_hour(result):
    result = dataclasses.replace(result, segments=[Segment(3725.25, 3730.0, "Late.", 1.0)], audio_duration_secs=4000.0)
    assert "01:02:05,250 --> 01:02:10,000" in format_result(result, "srt")
    assert "01:02:05.250 --> 01:02:10.000" in format_result(result, "vtt")


def test_no_segments(result):
    result = dataclasses.replace(result, segments=[], text="")
    assert parse_srt(format_result(result, "srt")) == []
    assert parse_vtt(format_result(result, "vtt")) == []


def test_json_round_trips(tmp_path, result):
    path = write_result(result, "json", tmp_path / "out.json")
    text = path.read_text(encoding="utf-8")
    assert "Привет, мир." in text  # ensure_ascii=False
    data = json.loads(text)
    assert list(data) == [f.name for f in dataclasses.fields(TranscriptionResult)]
    data["segments"] = [Segment(**s) for s in data["segments"]]
    assert TranscriptionResult(**data) == result


def test_text(result):
    assert format_result(result, "text") == result.text.strip() + "\n"


def test_verbose_report(result):
    report = format_result(result, "verbose")
    assert "[00:00:02.400 --> 00:00:05.000] (conf 0.88) How are you?" in report
    for needle in ("language: en", "audio duration: 10.00 s", "inference time: 0.50 s", "RTF: 0.0500"):
        assert needle in report
    assert "load_audio" in report and "encoder" in report and "temperature_fallback: 2" in report


def test_write_into_directory_names_file_after_audio(tmp_path, result):
    for fmt in FORMATS:
        path = write_result(result, fmt, tmp_path, audio_path="/data/talk.flac")
        assert path == tmp_path / f"talk.{EXTENSIONS[fmt]}"
        assert path.read_text(encoding="utf-8") == format_result(result, fmt)


def test_write_into_directory_needs_audio_path(tmp_path, result):
    with pytest.raises(InvalidOptionError, match="audio_path"):
        write_result(result, "srt", tmp_path)


def test_write_to_stdout(capsys, result):
    assert write_result(result, "vtt", None) is None
    assert capsys.readouterr().out == format_result(result, "vtt")


def test_unknown_format(result):
    with pytest.raises(InvalidOptionError, match=r"'docx'.*text, json, srt, vtt, verbose"):
        format_result(result, "docx")
    with pytest.raises(InvalidOptionError):
        write_result(result, "tsv", None)
