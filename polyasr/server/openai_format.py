"""OpenAI's audio API on polyasr's types: the request fields -> `TranscribeOptions`, a
`TranscriptionResult` -> each `response_format`, the streamed events, and the error body.

Field names and shapes follow OpenAI's API reference (the `openai` client's `types/audio/`):
`Transcription` {text, usage}, `TranscriptionVerbose` {task, language, duration, text, segments,
words, usage}, `TranscriptionSegment` {id, seek, start, end, text, tokens, temperature,
avg_logprob, compression_ratio, no_speech_prob}, `TranscriptionWord` {word, start, end}, and the
`transcript.text.delta` / `transcript.text.done` stream events. Nothing here imports a web framework.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass

from polyasr.errors import (
    AsrError,
    AudioError,
    InvalidOptionError,
    ModelError,
    ModelNotFoundError,
    UnknownModelError,
)
from polyasr.options import TranscribeOptions
from polyasr.outputs import format_result
from polyasr.result import TranscriptionResult

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
GRANULARITIES = ("segment", "word")
# OpenAI's temperature: 0 lets the model raise it on failure (Whisper's fallback ladder), a higher
# value starts the ladder there; the ladder climbs in these steps up to 1.
TEMPERATURE_STEP = 0.2


# Whether this build's TranscribeOptions can ask for word times at all.
class ApiError(Exception):
    """An answer in OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def api_error(error: AsrError, param: str | None = None) -> ApiError:
    """A polyasr error -> the HTTP answer: the user's audio or option 400, a model id 404, the rest 500."""
    message = " ".join(str(error).split())
    if isinstance(error, AudioError):
        return ApiError(400, message, param="file", code="invalid_audio")
    if isinstance(error, InvalidOptionError):
        return ApiError(400, message, param=param, code="invalid_value")
    if isinstance(error, (UnknownModelError, ModelNotFoundError)):
        return ApiError(404, message, param="model", code="model_not_found")
    kind = "model_error" if isinstance(error, ModelError) else "backend_error"
    return ApiError(500, message, type="server_error", code=kind)


@dataclass
class AudioRequest:
    """One transcription or translation request, its fields checked."""

    model: str
    options: TranscribeOptions
    response_format: str
    granularities: tuple[str, ...]
    stream: bool


def parse_request(
    fields_: dict[str, list[str]],
    task: str,
    batch_size: int,
    aligner: str | None = None,
    aligner_path: str | None = None,
) -> AudioRequest:
    """The form's text fields (name -> values) -> an AudioRequest, or ApiError 400 naming the field.

    Fields OpenAI defines that polyasr has no use for (include[], chunking_strategy, ...) are ignored.
    batch_size: the server's; pieces of audio decoded in one pass (for Whisper, 1 is the sequential
    window loop and above 1 speech pieces; within either, it does not change the text).
    aligner, aligner_path: the server's forced aligner for word timestamps (`ServerConfig`).
    """
    model = _one(fields_, "model")
    if not model:
        raise ApiError(400, "the form field 'model' is required (an id from GET /v1/models)", param="model")
    fmt = _one(fields_, "response_format") or "json"
    if fmt not in RESPONSE_FORMATS:
        raise ApiError(
            400, f"response_format {fmt!r} is not one of: {', '.join(RESPONSE_FORMATS)}", param="response_format"
        )
    granularities = tuple(fields_.get("timestamp_granularities[]", []) + fields_.get("timestamp_granularities", []))
    for g in granularities:
        if g not in GRANULARITIES:
            raise ApiError(
                400, f"timestamp granularity {g!r} is not one of: segment, word", param="timestamp_granularities"
            )
    stream = (_one(fields_, "stream") or "false").lower()
    if stream not in ("true", "false"):
        raise ApiError(400, f"stream must be true or false, got {stream!r}", param="stream")
    words = "word" in granularities and fmt == "verbose_json"
    try:
        options = TranscribeOptions(
            language=_one(fields_, "language") if task == "transcribe" else None,
            task=task,
            temperatures=temperature_ladder(_one(fields_, "temperature")),
            initial_prompt=_one(fields_, "prompt") or None,
            batch_size=batch_size,
            word_timestamps=words,
            aligner=aligner if words else None,
            aligner_path=aligner_path,
        )
    except InvalidOptionError as e:
        raise api_error(e) from e
    return AudioRequest(model, options, fmt, granularities, stream == "true")


def _one(fields_: dict[str, list[str]], name: str) -> str | None:
    values = fields_.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, f"the form field {name!r} was given {len(values)} times; give it once", param=name)
    return values[0].strip()


def temperature_ladder(value: str | None) -> tuple[float, ...]:
    """OpenAI's `temperature` (0 to 1) -> the fallback ladder from it up to 1 (Whisper's rule)."""
    try:
        start = 0.0 if value in (None, "") else float(value)
    except ValueError:
        raise ApiError(400, f"temperature must be a number from 0 to 1, got {value!r}", param="temperature") from None
    if not 0.0 <= start <= 1.0:
        raise ApiError(400, f"temperature must be from 0 to 1, got {start}", param="temperature")
    steps = int((1.0 - start) / TEMPERATURE_STEP + 1e-9)
    return tuple(round(start + k * TEMPERATURE_STEP, 6) for k in range(steps + 1))


def check_word_request(req: AudioRequest, model, aligner: str | None = None) -> None:
    """Word granularity needs a model that times its own words, or a forced aligner the server
    loaded for it (`aligner`, its id); 400 otherwise, saying how to get one where there is."""
    if "word" not in req.granularities or req.response_format != "verbose_json" or aligner is not None:
        return
    caps = model.capabilities
    if caps.aligner is not None and not caps.word_timestamps:
        raise ApiError(
            400,
            f"{model.name}'s word timestamps come from the forced aligner {caps.aligner}, which this server "
            "has not loaded: start it with --aligner-path DIR, or ask for timestamp_granularities[]=segment",
            param="timestamp_granularities",
        )
    if not caps.word_timestamps:
        raise ApiError(
            400,
            f"{model.name} does not produce word timestamps; ask for timestamp_granularities[]=segment",
            param="timestamp_granularities",
        )


# ---- answers -------------------------------------------------------------------------------------


def render(result: TranscriptionResult, req: AudioRequest) -> tuple[str, str]:
    """A result in the request's response_format -> (body, media type). text / srt / vtt are the
    CLI's own writers, so the server's answer and `polyasr transcribe --format` agree byte for byte."""
    fmt = req.response_format
    if fmt in ("text", "srt", "vtt"):
        return format_result(result, fmt), "text/plain; charset=utf-8"
    if fmt == "json":
        body = {"text": result.text}
        if req.options.task == "transcribe":
            body["usage"] = {"type": "duration", "seconds": result.audio_duration_secs}
        return _json(body), "application/json"
    return _json(verbose(result, req)), "application/json"


def _json(body: dict) -> str:
    return json.dumps(body, ensure_ascii=False)


def verbose(result: TranscriptionResult, req: AudioRequest) -> dict:
    """OpenAI's verbose_json. language is the ISO code the model reported ("en"), "unknown" when it
    reported none; segments are left out when only word granularity was asked for."""
    translate = req.options.task == "translate"
    body = {
        "task": req.options.task,
        "language": "en" if translate else (result.language or "unknown"),
        "duration": result.audio_duration_secs,
        "text": result.text,
    }
    if req.granularities != ("word",):
        body["segments"] = [verbose_segment(i, s) for i, s in enumerate(result.segments)]
    if "word" in req.granularities:
        body["words"] = verbose_words(result)
    if not translate:
        body["usage"] = {"type": "duration", "seconds": result.audio_duration_secs}
    return body


def verbose_segment(index: int, seg) -> dict:
    """A `Segment` -> OpenAI's segment. What polyasr's segments do not carry gets OpenAI's neutral
    value: temperature and no_speech_prob 0. seek is the segment's start in 10 ms frames (Whisper's
    unit); avg_logprob is ln(confidence), which for Whisper and Qwen3-ASR is exactly the mean token
    log-probability (null for a confidence of 0); compression_ratio is Whisper's gzip ratio of the text."""
    return {
        "id": index,
        "seek": round(seg.start * 100),
        "start": seg.start,
        "end": seg.end,
        "text": seg.text,
        "tokens": [int(t) for t in seg.tokens],
        "temperature": 0.0,
        "avg_logprob": math.log(seg.confidence) if seg.confidence > 0 else None,
        "compression_ratio": compression_ratio(seg.text),
        "no_speech_prob": 0.0,
    }


def verbose_words(result: TranscriptionResult) -> list[dict]:
    """Every segment's `words` (Word: start, end, text, probability) -> OpenAI's [{word, start, end}]."""
    return [{"word": w.text.strip(), "start": w.start, "end": w.end} for seg in result.segments for w in seg.words]


def compression_ratio(text: str) -> float:
    """UTF-8 bytes over their zlib-compressed size (Whisper's repetition measure); 0 for no text."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def text_deltas(result: TranscriptionResult) -> list[str]:
    """One delta per segment whose concatenation is `result.text` (the outer whitespace the engine
    strips off the joined segments is cut from the first and last deltas)."""
    texts = [s.text for s in result.segments if s.text]
    joined = "".join(texts)
    lead, end = len(joined) - len(joined.lstrip()), len(joined.rstrip())
    deltas, pos = [], 0
    for t in texts:
        piece = joined[max(pos, lead) : min(pos + len(t), end)]
        pos += len(t)
        if piece:
            deltas.append(piece)
    return deltas


def stream_events(result: TranscriptionResult) -> list[str]:
    """Server-sent events: a `transcript.text.delta` per segment, then `transcript.text.done`."""
    events = [{"type": "transcript.text.delta", "delta": d} for d in text_deltas(result)]
    events.append({"type": "transcript.text.done", "text": result.text})
    return [f"data: {_json(e)}\n\n" for e in events]
