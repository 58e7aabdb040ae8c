"""`polyasr serve` through real HTTP on a loopback port: OpenAI's own client with every response
format and streaming, answers equal to the engine's and the CLI's; 32 concurrent mixed requests
with bad uploads between them; the API key, the upload limit, the full queue, the timeout, a
client that leaves, and SIGTERM while a request is in flight."""

from __future__ import annotations

import json
import random
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
from serve_helpers import (
    FIXTURES,
    QWEN,
    START_SECS,
    TINY,
    ModelGate,
    multipart,
    post_audio,
    request,
    running,
    subprocess_server,
)
from server_fixtures import _one_thread, aligner_dir, qwen_dir, qwen_engine  # noqa: F401

from polyasr import TranscribeOptions
from polyasr.audio import load_audio
from polyasr.cli import main
from polyasr.outputs import format_result

MAX_BATCH = 8
OPTIONS = TranscribeOptions(batch_size=MAX_BATCH)  # what the server makes of a request with no options
SHORT = FIXTURES / "en_short.wav"


def client(url: str, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)


def transcribe(url: str, path: Path, model: str, **kw):
    return client(url).audio.transcriptions.create(model=model, file=(path.name, path.read_bytes()), **kw)


def metric(url: str, name: str, **labels) -> float:
    """One sample of the server's /metrics (0 when absent)."""
    text = request(url, "GET", "/metrics")[2].decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if m and m[1] == name and ",".join(sorted((m[2] or "").split(","))) == want:
            return float(m[3])
    return 0.0


def wait_until(condition, what: str, secs: float = START_SECS):
    deadline = time.monotonic() + secs
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def both(whisper_tiny_en_engine, qwen_engine):
    return {TINY: whisper_tiny_en_engine, QWEN: qwen_engine}


@pytest.fixture(scope="module")
def server(both):
    with running(both, max_batch=MAX_BATCH, max_wait_ms=100) as url:
        yield url


@pytest.fixture(scope="module")
def expected(both):
    """The engine's own result per (model, fixture), computed once."""
    memo = {}

    def get(model, name):
        if (model, name) not in memo:
            memo[model, name] = both[model].transcribe_file(FIXTURES / name, OPTIONS)
        return memo[model, name]

    return get


def check_answer(fmt: str, answer, want):
    """An answer of the OpenAI client in format `fmt` against the engine's result."""
    if fmt in ("text", "srt", "vtt"):
        assert answer == format_result(want, fmt)
    elif fmt == "json":
        assert answer.text == want.text
    else:
        language = want.language or "unknown"  # random-weight Qwen3-ASR names no language it knows
        assert (answer.text, answer.language, answer.duration) == (want.text, language, want.audio_duration_secs)
        got = [(s.start, s.end, s.text, s.tokens) for s in answer.segments]
        assert got == [(s.start, s.end, s.text, s.tokens) for s in want.segments]


@pytest.mark.parametrize("model", [pytest.param(TINY, marks=pytest.mark.slow), QWEN])  # real weights: seconds a request
def test_openai_client_every_format_and_stream(server, expected, model):
    want = expected(model, "en_short.wav")
    assert want.text  # the comparison below must compare something
    cases = [dict(response_format=f) for f in ("json", "text", "srt", "vtt", "verbose_json")]
    cases += [dict(response_format="verbose_json", timestamp_granularities=["segment"]), dict(stream=True)]
    with ThreadPoolExecutor(len(cases)) as pool:
        answers = list(pool.map(lambda kw: transcribe(server, SHORT, model, **kw), cases))
    for kw, answer in zip(cases[:-1], answers):
        check_answer(kw["response_format"], answer, want)
    events = list(answers[-1])
    assert [e.type for e in events] == ["transcript.text.delta"] * (len(events) - 1) + ["transcript.text.done"]
    assert "".join(e.delta for e in events[:-1]) == events[-1].text == want.text
    assert len(events) - 1 == len(want.segments)
    models = client(server).models.list()
    assert sorted(m.id for m in models.data) == sorted([TINY, QWEN])


def test_answers_equal_the_cli(server, qwen_dir, capsys):
    for fmt in ("text", "srt", "vtt"):
        code = main(["transcribe", str(SHORT), "--model", QWEN, "--model-path", str(qwen_dir), "--format", fmt])
        assert code == 0 and transcribe(server, SHORT, QWEN, response_format=fmt) == capsys.readouterr().out


def test_word_granularity(server):
    with pytest.raises(openai.BadRequestError) as e:
        transcribe(server, SHORT, QWEN, response_format="verbose_json", timestamp_granularities=["word"])
    error = e.value.body
    assert e.value.status_code == 400 and error["param"] == "timestamp_granularities"
    assert "come from the forced aligner qwen3-forced-aligner-0.6b" in error["message"]
    assert "--aligner-path" in error["message"]


def test_word_granularity_through_the_forced_aligner(qwen_engine, aligner_dir):
    """With --aligner-path, Qwen3-ASR's word answers are its transcript timed by the aligner, as
    `transcribe --word-timestamps --aligner-path` gives them; the aligner loads with the server."""
    opts = TranscribeOptions(batch_size=MAX_BATCH, word_timestamps=True, aligner_path=str(aligner_dir))
    want = qwen_engine.transcribe_file(SHORT, opts)
    words = [w for s in want.segments for w in s.words]
    assert words and want.info["aligner"] == "qwen3-forced-aligner-0.6b"
    with running({QWEN: qwen_engine}, max_batch=MAX_BATCH, aligner_path=str(aligner_dir)) as url:
        got = transcribe(url, SHORT, QWEN, response_format="verbose_json", timestamp_granularities=["word"])
        plain = transcribe(url, SHORT, QWEN, response_format="verbose_json")
    assert [(w.word, w.start, w.end) for w in got.words] == [(w.text.strip(), w.start, w.end) for w in words]
    assert got.text == plain.text == want.text and not getattr(plain, "words", None)


@pytest.mark.slow
def test_word_granularity_gives_the_engines_words(server, whisper_tiny_en_engine):
    got = transcribe(server, SHORT, TINY, response_format="verbose_json", timestamp_granularities=["word", "segment"])
    want = whisper_tiny_en_engine.transcribe_file(SHORT, TranscribeOptions(batch_size=MAX_BATCH, word_timestamps=True))
    words = [w for s in want.segments for w in s.words]
    assert words and [(w.word, w.start, w.end) for w in got.words] == [(w.text.strip(), w.start, w.end) for w in words]
    assert got.text == want.text and len(got.segments) == len(want.segments)


def test_options_and_translation_errors(server):
    with pytest.raises(openai.BadRequestError, match="cannot be forced to language 'xx'"):
        transcribe(server, SHORT, QWEN, language="xx")
    with pytest.raises(openai.BadRequestError, match="only transcribes"):
        client(server).audio.translations.create(model=TINY, file=("a.wav", SHORT.read_bytes()))
    with pytest.raises(openai.NotFoundError, match="this server has: whisper-tiny.en, qwen3-asr-0.6b"):
        transcribe(server, SHORT, "whisper-1")


@pytest.mark.slow
def test_translation_with_multilingual_whisper(whisper_base_engine):
    # English speech: the translate task's text comes without temperature fallbacks (espeak's
    # Russian sends base into fallback loops that cost minutes on two cores).
    want = whisper_base_engine.transcribe_file(SHORT, TranscribeOptions(task="translate", batch_size=2))
    assert "weather" in want.text
    with running({"whisper-base": whisper_base_engine}, max_batch=2) as url:
        answer = client(url).audio.translations.create(
            model="whisper-base", file=(SHORT.name, SHORT.read_bytes()), response_format="verbose_json"
        )
    assert (answer.text, answer.language, answer.task) == (want.text, "en", "translate")
    assert [s.text for s in answer.segments] == [s.text for s in want.segments]


def _bad_uploads() -> list[tuple[dict, int, str]]:
    """(request, expected status, expected error code) for requests a client gets wrong."""
    wav = SHORT.read_bytes()
    return [
        (dict(model=QWEN, data=b"this is not audio"), 400, "invalid_audio"),
        (dict(model=QWEN, data=wav[: len(wav) // 3]), 400, "invalid_audio"),  # truncated WAV
        (dict(model=TINY, data=b""), 400, "invalid_audio"),
        (dict(model="whisper-1", data=wav), 404, "model_not_found"),
        (dict(model=QWEN, data=wav, temperature="3"), 400, None),
        (dict(model=QWEN, data=wav, language="xx"), 400, "invalid_value"),
        (dict(model=TINY, data=wav, response_format="docx"), 400, None),
        (dict(model=QWEN, data=wav, stream="perhaps"), 400, None),
    ]


@pytest.mark.slow  # real Whisper weights
def test_whisper_requests_share_one_batch_of_pieces(whisper_tiny_en_engine, monkeypatch):
    """Four requests that arrive together are one model call: their speech pieces go through the
    encoder as one batch of four and their decoders step together; each answer equals the request's
    result alone, and the answer of a server that decodes one request per call (--max-batch 1,
    the same --batch-size)."""
    from polyasr.models.whisper import decode, model

    names = ["en_short.wav", "en_medium.wav", "ru_short.wav", "en_short_stereo_44k.flac"]
    options = TranscribeOptions(batch_size=len(names))
    alone = {n: whisper_tiny_en_engine.transcribe_file(FIXTURES / n, options) for n in names}
    encoded, decoded = [], []
    real_encode, real_decode = model.encode, decode.decode_batch
    monkeypatch.setattr(model, "encode", lambda p, c, B, mel: encoded.append(mel.shape[0]) or real_encode(p, c, B, mel))

    def decode_batch(m, features, initial, *args, **kwargs):
        decoded.append(len(initial))
        return real_decode(m, features, initial, *args, **kwargs)

    monkeypatch.setattr(decode, "decode_batch", decode_batch)
    engines = {TINY: whisper_tiny_en_engine}
    with running(engines, max_batch=len(names), max_wait_ms=30_000) as url:  # the batch is due when full
        with ThreadPoolExecutor(len(names)) as pool:
            answers = list(
                pool.map(lambda n: post_audio(url, FIXTURES / n, TINY, response_format="verbose_json"), names)
            )
        batches = metric(url, "polyasr_batch_size_sum", model=TINY), metric(url, "polyasr_batch_size_count", model=TINY)
    assert batches == (len(names), 1)
    assert encoded == [len(names)] and decoded[0] == len(names)  # later decode calls: temperature fallback
    with running(engines, max_batch=1, batch_size=len(names), max_wait_ms=0) as url:
        with ThreadPoolExecutor(len(names)) as pool:
            answers += pool.map(lambda n: post_audio(url, FIXTURES / n, TINY, response_format="verbose_json"), names)
    assert encoded[1:] == [1] * len(names)
    for name, (status, _, body) in zip(names * 2, answers):
        assert status == 200, body
        got = json.loads(body)
        want = alone[name]
        assert got["text"] == want.text
        assert [(s["start"], s["end"], s["tokens"]) for s in got["segments"]] == [
            (s.start, s.end, s.tokens) for s in want.segments
        ]


@pytest.mark.slow  # real Whisper weights among the requests
def test_concurrent_mixed_requests_with_bad_uploads(both, expected):
    """32 good requests (both models, every format) and 8 bad ones interleaved, from 8 threads."""
    qwen_files = ["en_short.wav", "ru_short.wav", "en_short.ogg", "en_short_stereo_44k.flac", "silence.wav"]
    formats = ["json", "text", "srt", "vtt", "verbose_json"]
    good = [(QWEN, qwen_files[i % 5], formats[(i // 5 + i) % 5]) for i in range(26)]
    # Whisper decodes one request at a time and costs seconds per spoken file on two cores: one speaks.
    good += [(TINY, "en_short.wav", "verbose_json")] + [(TINY, "silence.wav", f) for f in formats]
    jobs = [("good", g) for g in good] + [("bad", b) for b in _bad_uploads()]
    random.Random(0).shuffle(jobs)
    for model, name, _ in good:
        expected(model, name)

    def send(job):
        kind, spec = job
        if kind == "good":
            model, name, fmt = spec
            return transcribe(url, FIXTURES / name, model, response_format=fmt)
        fields, status, code = spec
        fields = dict(fields)
        return post_audio(url, fields.pop("data"), fields.pop("model"), **fields)

    with running(both, max_batch=MAX_BATCH, max_wait_ms=100) as url:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(send, jobs))
        qwen_batches = metric(url, "polyasr_batch_size_count", model=QWEN)
        qwen_singles = metric(url, "polyasr_batch_size_bucket", model=QWEN, le="1.0")
        answered = sum(
            metric(url, "polyasr_requests_total", route="/v1/audio/transcriptions", status=s)
            for s in ("200", "400", "404")
        )
    assert len(answers) == len(jobs) == 40 and answered == 40
    for (kind, spec), answer in zip(jobs, answers):
        if kind == "good":
            model, name, fmt = spec
            check_answer(fmt, answer, expected(model, name))
        else:
            status, _, body = answer
            error = json.loads(body)["error"]
            assert (status, error["code"] if spec[2] else None) == (spec[1], spec[2]), error
            assert error["message"] and error["type"] == "invalid_request_error"
    # Qwen3-ASR batches across inputs: some of its model calls decoded several requests at once.
    assert qwen_batches < 26 and qwen_singles < qwen_batches


def test_api_key(qwen_engine):
    clip = load_audio(SHORT)[:8000]
    with running({QWEN: qwen_engine}, api_key="s3cret") as url:
        assert request(url, "GET", "/health")[0] == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            status, head, body = request(url, "GET", "/v1/models", headers=headers)
            assert status == 401 and head["www-authenticate"] == "Bearer"
            assert json.loads(body)["error"]["code"] == "invalid_api_key"
        assert request(url, "GET", "/metrics")[0] == 401
        with pytest.raises(openai.AuthenticationError):
            client(url, "wrong").audio.transcriptions.create(model=QWEN, file=("a.wav", SHORT.read_bytes()))
        good = client(url, "s3cret")
        assert [m.id for m in good.models.list().data] == [QWEN]
        assert good.audio.transcriptions.create(model=QWEN, file=("a.flac", _wav_bytes(clip))).text is not None
        assert request(url, "GET", "/metrics", headers={"Authorization": "Bearer s3cret"})[0] == 200


def _wav_bytes(samples) -> bytes:
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _raw_post(url: str, head: bytes, chunks, read_after: int | None = None) -> bytes:
    """Send `head` then `chunks` on a raw socket, stopping early when the server answers; -> the answer."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head)
        s.setblocking(False)
        answer = b""
        for chunk in chunks:
            try:
                answer += s.recv(65536)
                break  # the server answered before the body ended
            except BlockingIOError:
                pass
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.001)
        s.settimeout(30)
        try:
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                data = s.recv(65536)
                if not data:
                    break
                answer += data
        except ConnectionResetError:
            pass
        return answer


def test_upload_limit(qwen_engine):
    with running({QWEN: qwen_engine}, max_upload_mb=0.1) as url:
        # A declared length past the limit: answered from the headers, no body sent at all.
        status, _, body = post_audio_head(url, content_length=10**9)
        assert status == 413 and json.loads(body)["error"]["code"] == "file_too_large"
        # A chunked body with no declared length: the read stops once it passes the limit.
        body, ctype = multipart({"model": QWEN}, {"file": ("big.wav", bytes(2 * 10**6))})
        head = (
            f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        chunks = [b"%x\r\n%s\r\n" % (len(body[i : i + 8192]), body[i : i + 8192]) for i in range(0, len(body), 8192)]
        answer = _raw_post(url, head, chunks + [b"0\r\n\r\n"])
        assert answer.startswith(b"HTTP/1.1 413") and b"file_too_large" in answer
        # Under the limit is served.
        assert post_audio(url, _wav_bytes(load_audio(SHORT)[:8000]), QWEN)[0] == 200


def post_audio_head(url: str, content_length: int):
    head = (
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {content_length}\r\n\r\n"
    ).encode()
    answer = _raw_post(url, head, [])
    status = int(answer.split(b" ", 2)[1])
    return status, None, answer.split(b"\r\n\r\n", 1)[1]


def _in_thread(fn, *args, **kw):
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("answer", fn(*args, **kw)), daemon=True)
    thread.start()
    return thread, out


def test_full_queue_is_503(qwen_engine, monkeypatch):
    gate = ModelGate(qwen_engine.model, monkeypatch)
    clip = _wav_bytes(load_audio(SHORT)[:8000])
    with running({QWEN: qwen_engine}, max_batch=1, max_queue=1, max_wait_ms=0) as url:
        first, a = _in_thread(post_audio, url, clip, QWEN)
        assert gate.entered.wait(START_SECS)  # the worker is inside the model with the first request
        second, b = _in_thread(post_audio, url, clip, QWEN)
        wait_until(lambda: metric(url, "polyasr_queue_depth", model=QWEN) == 1, "the second request to queue")
        status, headers, body = post_audio(url, clip, QWEN)
        assert status == 503 and headers["retry-after"] == "1"
        assert json.loads(body)["error"]["code"] == "queue_full"
        gate.release()
        first.join(START_SECS), second.join(START_SECS)
        assert a["answer"][0] == b["answer"][0] == 200 and gate.calls == 2


def test_timeout_drops_the_request(qwen_engine, monkeypatch):
    gate = ModelGate(qwen_engine.model, monkeypatch)
    clip = _wav_bytes(load_audio(SHORT)[:8000])
    with running({QWEN: qwen_engine}, max_batch=1, max_wait_ms=0, request_timeout=1.0) as url:
        first, a = _in_thread(post_audio, url, clip, QWEN)
        assert gate.entered.wait(START_SECS)
        t0 = time.monotonic()
        status, _, body = post_audio(url, clip, QWEN)  # waits in the queue behind the first
        assert status == 504 and json.loads(body)["error"]["code"] == "timeout" and time.monotonic() - t0 < 5
        first.join(START_SECS)
        assert a["answer"][0] == 504
        gate.release()
        assert post_audio(url, clip, QWEN)[0] == 200  # decoded after the first call, the dropped one never
        assert gate.calls == 2 and metric(url, "polyasr_dropped_total", model=QWEN, reason="timeout") == 2


def test_client_disconnect_drops_the_request(qwen_engine, monkeypatch):
    gate = ModelGate(qwen_engine.model, monkeypatch)
    clip = _wav_bytes(load_audio(SHORT)[:8000])
    with running({QWEN: qwen_engine}, max_batch=1, max_wait_ms=0) as url:
        first, a = _in_thread(post_audio, url, clip, QWEN)
        assert gate.entered.wait(START_SECS)
        body, ctype = multipart({"model": QWEN}, {"file": ("a.wav", clip)})
        head = f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as s:
            s.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            wait_until(lambda: metric(url, "polyasr_queue_depth", model=QWEN) == 1, "the request to queue")
        wait_until(lambda: metric(url, "polyasr_dropped_total", model=QWEN, reason="disconnected") == 1, "the drop")
        assert metric(url, "polyasr_queue_depth", model=QWEN) == 0
        gate.release()
        first.join(START_SECS)
        assert a["answer"][0] == 200 and gate.calls == 1


def test_sigterm_finishes_the_request_in_flight(qwen_dir, qwen_engine):
    want = qwen_engine.transcribe_file(SHORT, TranscribeOptions(batch_size=8))
    args = ["--model", QWEN, "--model-path", str(qwen_dir), "--device", "cpu", "--max-wait-ms", "3000"]
    with subprocess_server(args) as (proc, url):
        thread, out = _in_thread(post_audio, url, SHORT, QWEN, response_format="text")
        # The request waits in the worker's queue for company (max-wait 3 s) when SIGTERM comes.
        wait_until(lambda: metric(url, "polyasr_queue_depth", model=QWEN) == 1, "the request to queue")
        proc.send_signal(signal.SIGTERM)
        thread.join(START_SECS)
        assert out["answer"][0] == 200 and out["answer"][2].decode() == format_result(want, "text")
        # uvicorn re-raises the signal once shut down, so the exit status says SIGTERM ended it.
        assert proc.wait(START_SECS) in (0, -signal.SIGTERM)
        with pytest.raises(OSError):
            request(url, "GET", "/health", timeout=5)
        log = proc.stdout.read()
        assert "Application shutdown complete" in log and "Finished server process" in log


def test_serve_refuses_bad_settings_in_one_line(capsys):
    assert main(["serve", "--max-batch", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["polyasr: error: --max-batch must be >= 1, got 0"]


def test_serve_with_a_missing_aligner_stops_at_start_in_one_line(qwen_dir, tmp_path, capsys):
    """--aligner-path is loaded with the models: a wrong one stops `polyasr serve` before it listens."""
    args = ["serve", "--model", QWEN, "--model-path", str(qwen_dir), "--device", "cpu"]
    assert main([*args, "--aligner-path", str(tmp_path / "missing"), "--port", "1"]) == 4  # model not found
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("polyasr: error: ") and "qwen3-forced-aligner-0.6b" in err[0]


@pytest.mark.slow
def test_rss_stays_flat_over_500_requests(qwen_dir):
    """500 sequential requests on one keep-alive connection: the server's RSS after the last is
    within a bound of its RSS after the first 100 (a leak of each request's audio alone, 32 KB,
    would add 12.5 MB over the 400 requests between the two readings)."""
    import http.client

    import psutil

    clip = _wav_bytes(load_audio(SHORT)[:8000])
    body, ctype = multipart({"model": QWEN, "response_format": "verbose_json"}, {"file": ("a.wav", clip)})
    args = ["--model", QWEN, "--model-path", str(qwen_dir), "--device", "cpu", "--max-wait-ms", "0"]
    with subprocess_server(args) as (proc, url):
        server = psutil.Process(proc.pid)
        conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=60)
        rss = {}
        for i in range(1, 501):
            conn.request("POST", "/v1/audio/transcriptions", body=body, headers={"Content-Type": ctype})
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read())["duration"] == 0.5
            if i in (100, 500):
                rss[i] = server.memory_info().rss / 2**20
        conn.close()
    assert rss[500] - rss[100] < 6.0, f"RSS grew from {rss[100]:.1f} MB to {rss[500]:.1f} MB"


def test_serve_without_the_extra_says_what_to_install(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if not installed: importing it raises
    for name in ("polyasr.server", "polyasr.server.app"):
        monkeypatch.delitem(sys.modules, name)
    assert main(["serve"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'polyasr[server]'" in err[0]
