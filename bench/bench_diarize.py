"""Speaker diarization on the CPU: the whole of `polyasr.diarize` (VAD + GE2E embeddings +
clustering) on a 10 min conversation, beside Silero VAD alone (the part diarization cannot avoid)
and Whisper tiny.en transcribing the same audio (what `transcribe --diarize` adds diarization to);
the whole diarization at 1 and 2 torch threads, and the spectral clustering's eigen-decompositions
at 1 and 2 BLAS threads, alternated round by round; with WeSpeaker's ResNet34 at its published size
(random weights: the time does not depend on them); the DER of each fixture conversation (GE2E).

The audio is the three- and four-speaker conversations (tests/fixtures/diarize_3spk.flac,
diarize_4spk.flac) one after the other, tiled to POLYASR_BENCH_DIARIZE_MINUTES (default 10).
POLYASR_BENCH_FULL=1 adds one hour of the same (its time and peak memory).
Run: `pytest bench/bench_diarize.py -s` (not --benchmark-only: the alternated comparisons time
themselves); the load average is printed with each figure.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from conftest import FIXTURES, FULL, note, record

from polyasr.audio import load_audio
from polyasr.benchmark import peak_rss_mb
from polyasr.diarization import DiarizeOptions, diarize_signal, embed_speech, load_embedding
from polyasr.vad import load_vad, speech_timestamps

MINUTES = float(os.environ.get("POLYASR_BENCH_DIARIZE_MINUTES", "10"))
GROUP = f"diarization, {MINUTES:g} min of a 3 + 4 speaker conversation, CPU"
BASELINE = "Silero VAD alone"
CLUSTER_GROUP = "spectral clustering of the conversation's windows"


def _load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def conversation(minutes: float) -> np.ndarray:
    piece = np.concatenate([load_audio(FIXTURES / f"diarize_{n}spk.flac") for n in (3, 4)])
    return np.resize(piece, int(minutes * 60 * 16000)).astype(np.float32)


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return conversation(MINUTES)


@pytest.fixture(scope="module")
def threads():
    """torch's intra-op thread count, restored after the module."""
    import torch

    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _rtf(group, name, seconds, audio):
    note(group, f"{name}: {seconds:.2f} s, RTF {seconds / (len(audio) / 16000):.4f} ({_load()})")


def test_vad_alone(benchmark, audio):
    vad = load_vad("cpu")
    benchmark.pedantic(lambda: speech_timestamps(audio, vad=vad), rounds=1, iterations=1)
    record(GROUP, BASELINE, BASELINE, benchmark)
    _rtf(GROUP, BASELINE, benchmark.stats.stats.min, audio)


def test_diarize_at_1_and_2_threads(audio, threads):
    """The whole diarization (spectral, count estimated), torch at 1 then 2 threads, twice over;
    the LSTM's 480 sequential steps per batch each end at a barrier of the intra-op threads."""
    vad, encoder = load_vad("cpu"), load_embedding()
    import sklearn.cluster  # noqa: F401  (its first import is not diarization's cost)

    best: dict[int, float] = {}
    for _ in range(2):
        for n in (1, 2):
            threads(n)
            t0 = time.perf_counter()
            turns = diarize_signal(audio, DiarizeOptions(), vad=vad, encoder=encoder)
            seconds = time.perf_counter() - t0
            best[n] = min(best.get(n, np.inf), seconds)
            _rtf(GROUP, f"polyasr.diarize, {n} torch thread(s), one round", seconds, audio)
    threads(2)
    for n, seconds in best.items():
        _rtf(GROUP, f"polyasr.diarize, {n} torch thread(s), best of 2", seconds, audio)
    note(GROUP, f"{len({t.speaker for t in turns})} speakers, {len(turns)} turns")


def test_diarize_wespeaker(benchmark, audio, tmp_path):
    torch = pytest.importorskip("torch")
    from polyasr.backends import get_backend
    from polyasr.models.wespeaker_resnet.config import WeSpeakerConfig
    from polyasr.models.wespeaker_resnet.pipeline import WeSpeakerEncoder
    from polyasr.models.wespeaker_resnet.weights import param_shapes

    gen = torch.Generator().manual_seed(0)
    state = {
        f"resnet.{k}": 0.1 * torch.randn(shape, generator=gen) for k, shape in param_shapes(WeSpeakerConfig()).items()
    }
    state |= {k: v.abs() + 0.5 for k, v in state.items() if k.endswith("running_var")}
    torch.save({"state_dict": state}, tmp_path / "pytorch_model.bin")
    vad, encoder = load_vad("cpu"), WeSpeakerEncoder.load(get_backend("cpu", dtype="float32"), tmp_path)
    opts = DiarizeOptions(embedding="wespeaker-resnet34")
    turns = benchmark.pedantic(lambda: diarize_signal(audio, opts, vad=vad, encoder=encoder), rounds=1, iterations=1)
    name = "polyasr.diarize (WeSpeaker ResNet34, spectral)"
    record(GROUP, BASELINE, name, benchmark)
    _rtf(GROUP, name, benchmark.stats.stats.min, audio)
    note(GROUP, f"{name}: {len(turns)} turns (random weights: the count means nothing)")


@pytest.fixture(scope="module")
def whisper_tiny_en():
    from polyasr import AsrEngine
    from polyasr.errors import ModelNotFoundError
    from polyasr.locate import locate_checkpoint
    from polyasr.registry import get_spec

    try:
        return AsrEngine.from_model("whisper-tiny.en", locate_checkpoint(get_spec("whisper-tiny.en")), device="cpu")
    except ModelNotFoundError as e:
        pytest.skip(str(e))


def test_transcription_alone(benchmark, audio, whisper_tiny_en):
    """Whisper tiny.en, greedy, on the same audio: what `transcribe --diarize` adds diarization to."""
    from polyasr.options import TranscribeOptions

    options = TranscribeOptions(temperatures=(0.0,), beam_size=1)
    benchmark.pedantic(lambda: whisper_tiny_en.transcribe(audio, options), rounds=1, iterations=1)
    record(GROUP, BASELINE, "Whisper tiny.en transcription", benchmark)
    _rtf(GROUP, "Whisper tiny.en transcription (greedy)", benchmark.stats.stats.min, audio)


def test_spectral_clustering_blas_threads(audio):
    """The spectral clustering of the conversation's windows with the BLAS at 1 and 2 threads."""
    from threadpoolctl import threadpool_limits

    from polyasr.diarization import MAX_CLUSTER_POINTS, _spectral

    _, embeddings = embed_speech(audio[: 5 * 60 * 16000], DiarizeOptions(), encoder=load_embedding())
    x = embeddings[:MAX_CLUSTER_POINTS]
    best: dict[int, float] = {}
    for _ in range(2):
        for n in (1, 2):
            with threadpool_limits(limits=n, user_api="blas"):
                t0 = time.perf_counter()
                _spectral(x, 1, len(x))
                best[n] = min(best.get(n, np.inf), time.perf_counter() - t0)
    for n, seconds in best.items():
        note(CLUSTER_GROUP, f"{len(x)} windows, {n} BLAS thread(s): {seconds:.2f} s ({_load()})")


@pytest.mark.skipif(not FULL, reason="POLYASR_BENCH_FULL=1: one hour of audio")
def test_one_hour(benchmark, threads):
    """One hour: time and peak RSS (this process's, so models and the signal count too)."""
    audio = conversation(60)
    vad, encoder = load_vad("cpu"), load_embedding()
    threads(1)
    benchmark.pedantic(lambda: diarize_signal(audio, DiarizeOptions(), vad=vad, encoder=encoder), rounds=1)
    threads(2)
    peak = peak_rss_mb()
    _rtf(
        "diarization, 1 h",
        f"polyasr.diarize, 1 torch thread (peak RSS {peak:.0f} MB)",
        benchmark.stats.stats.min,
        audio,
    )


def test_der_of_the_fixtures():
    metrics = pytest.importorskip("pyannote.metrics.diarization")
    from pyannote.core import Annotation, Segment

    def annotation(turns):
        ann = Annotation()
        for start, end, speaker in turns:
            ann[Segment(start, end)] = speaker
        return ann

    group = "diarization error rate, collar 0.25 s"
    for count in (2, 3, 4):
        stem = FIXTURES / f"diarize_{count}spk"
        rows = [line.split() for line in stem.with_suffix(".rttm").read_text().splitlines()]
        ref = annotation([(float(f[3]), float(f[3]) + float(f[4]), f[7]) for f in rows])
        signal = load_audio(stem.with_suffix(".flac"))
        uem = annotation([(0.0, len(signal) / 16000, "all")]).get_timeline()
        for kw in ({"num_speakers": count}, {}, {"clustering": "agglomerative"}):
            turns = diarize_signal(signal, DiarizeOptions(**kw))
            der = metrics.DiarizationErrorRate(collar=0.25)(ref, annotation(turns), uem=uem)
            found = len({t.speaker for t in turns})
            note(group, f"{stem.name} {kw or {'clustering': 'spectral'}}: DER {der:.4f}, {found} speakers")
