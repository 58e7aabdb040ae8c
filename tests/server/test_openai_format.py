"""OpenAI's request fields and answer shapes on polyasr's types, without a server or a model."""

from __future__ import annotations

import json
import math
import zlib
from types import SimpleNamespace

import pytest

from polyasr.result import Segment, TranscriptionResult
from polyasr.server.openai_format import (
    ApiError,
    parse_request,
    render,
    stream_events,
    temperature_ladder,
    text_deltas,
    verbose_segment,
    verbose_words,
)


def _result(texts, language="en") -> TranscriptionResult:
    segments = [Segment(i, i + 1.0, t, 0.5, [7, i]) for i, t in enumerate(texts)]
    return TranscriptionResult("".join(texts).strip(), segments, language, "m", 3.0, 0.1, 0.03)


@pytest.mark.parametrize(
    "texts",
    [[" Hello", " world."], ["  a", "", " b ", " c  "], [" ", " x"], [], [" only "], ["x", "y"]],
)
def test_deltas_concatenate_to_the_text(texts):
    result = _result(texts)
    deltas = text_deltas(result)
    assert "".join(deltas) == result.text and all(deltas)
    events = [json.loads(e.removeprefix("data: ")) for e in stream_events(result)]
    assert all(e["type"] == "transcript.text.delta" for e in events[:-1])
    assert events[-1] == {"type": "transcript.text.done", "text": result.text}


def test_temperature_ladder_starts_at_the_given_temperature():
    assert temperature_ladder(None) == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    assert temperature_ladder("0") == temperature_ladder(None)
    assert temperature_ladder("0.5") == (0.5, 0.7, 0.9)
    assert temperature_ladder("1") == (1.0,)
    for bad in ("1.5", "-0.1", "hot"):
        with pytest.raises(ApiError) as e:
            temperature_ladder(bad)
        assert e.value.status == 400 and e.value.param == "temperature"


def test_request_fields_become_options():
    fields = {
        "model": ["qwen3-asr-0.6b"],
        "language": [" RU "],
        "prompt": ["names: Ivan"],
        "response_format": ["verbose_json"],
        "temperature": ["0.8"],
        "timestamp_granularities[]": ["segment"],
        "stream": ["true"],
        "include[]": ["logprobs"],  # OpenAI's fields polyasr has no use for are ignored
    }
    req = parse_request(fields, "transcribe", batch_size=4)
    assert req.model == "qwen3-asr-0.6b" and req.response_format == "verbose_json" and req.stream
    assert req.granularities == ("segment",)
    o = req.options
    assert (o.language, o.initial_prompt, o.temperatures, o.batch_size) == ("ru", "names: Ivan", (0.8, 1.0), 4)
    assert parse_request({"model": ["m"], "language": ["ru"]}, "translate", 1).options.language is None


@pytest.mark.parametrize(
    "fields, param",
    [
        ({}, "model"),
        ({"model": ["m"], "response_format": ["xml"]}, "response_format"),
        ({"model": ["m"], "timestamp_granularities[]": ["char"]}, "timestamp_granularities"),
        ({"model": ["m"], "stream": ["maybe"]}, "stream"),
        ({"model": ["m", "n"]}, "model"),
    ],
)
def test_bad_fields_are_400_naming_the_field(fields, param):
    with pytest.raises(ApiError) as e:
        parse_request(fields, "transcribe", 1)
    assert e.value.status == 400 and e.value.param == param
    assert set(e.value.body()["error"]) == {"message", "type", "param", "code"}


def test_word_granularity_asks_for_word_timestamps_in_verbose_json_only():
    fields = {"model": ["m"], "response_format": ["verbose_json"], "timestamp_granularities[]": ["word"]}
    assert parse_request(fields, "transcribe", 1).options.word_timestamps
    fields["response_format"] = ["json"]  # OpenAI gives words in verbose_json only
    assert not parse_request(fields, "transcribe", 1).options.word_timestamps


def test_verbose_segment_fields():
    seg = Segment(1.25, 2.5, " so so so so so so", 0.25, [5, 6])
    s = verbose_segment(3, seg)
    data = seg.text.encode()
    assert s == {
        "id": 3,
        "seek": 125,
        "start": 1.25,
        "end": 2.5,
        "text": seg.text,
        "tokens": [5, 6],
        "temperature": 0.0,
        "avg_logprob": math.log(0.25),
        "compression_ratio": len(data) / len(zlib.compress(data)),
        "no_speech_prob": 0.0,
    }
    assert verbose_segment(0, Segment(0, 1, "", 0.0))["avg_logprob"] is None


def test_words_map_to_openai_words():
    word = lambda s, e, t: SimpleNamespace(start=s, end=e, text=t, probability=0.9)  # noqa: E731
    result = SimpleNamespace(
        segments=[
            SimpleNamespace(words=[word(0.0, 0.4, " Hello"), word(0.4, 0.9, " world")]),
            SimpleNamespace(words=[]),
        ]
    )
    assert verbose_words(result) == [
        {"word": "Hello", "start": 0.0, "end": 0.4},
        {"word": "world", "start": 0.4, "end": 0.9},
    ]


def test_json_and_verbose_answers():
    result = _result([" Hello", " world."])
    req = parse_request({"model": ["m"]}, "transcribe", 1)
    body, media = render(result, req)
    assert media == "application/json"
    assert json.loads(body) == {"text": "Hello world.", "usage": {"type": "duration", "seconds": 3.0}}
    req = parse_request({"model": ["m"], "response_format": ["verbose_json"]}, "translate", 1)
    v = json.loads(render(result, req)[0])
    assert (v["task"], v["language"], v["duration"], v["text"]) == ("translate", "en", 3.0, "Hello world.")
    assert [s["text"] for s in v["segments"]] == [" Hello", " world."] and "words" not in v and "usage" not in v
