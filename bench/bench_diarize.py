"""Speaker diarization on the CPU: the whole of `polyasr.diarize` (VAD + GE2E embeddings +
clustering; and with WeSpeaker's ResNet34 at its published size, random weights, as the time does
not depend on them) beside the VAD alone on the same audio (the baseline: the part diarization
cannot avoid), and the DER of the two-speaker fixture with the count given and estimated (GE2E).

The audio is the two-speaker conversation (tests/fixtures/diarize_2spk.flac) tiled to
POLYASR_BENCH_DIARIZE_MINUTES (default 2; 10 for the issue's figure).
Run: `pytest bench/bench_diarize.py --benchmark-only -s`.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import FIXTURES, note, record

from polyasr.audio import load_audio
from polyasr.diarization import DiarizeOptions, diarize_signal, load_embedding
from polyasr.vad import load_vad, speech_timestamps

MINUTES = float(os.environ.get("POLYASR_BENCH_DIARIZE_MINUTES", "2"))
GROUP = f"diarization, {MINUTES:g} min of a two-speaker conversation, CPU"
BASELINE = "Silero VAD alone"


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    piece = load_audio(FIXTURES / "diarize_2spk.flac")
    return np.resize(piece, int(MINUTES * 60 * 16000)).astype(np.float32)


def _rtf(name, benchmark, audio):
    note(GROUP, f"{name}: RTF {benchmark.stats.stats.min / (len(audio) / 16000):.5f}")


def test_vad_alone(benchmark, audio):
    vad = load_vad("cpu")
    benchmark.pedantic(lambda: speech_timestamps(audio, vad=vad), rounds=1, iterations=1)
    record(GROUP, BASELINE, BASELINE, benchmark)
    _rtf(BASELINE, benchmark, audio)


@pytest.mark.parametrize("clustering", ["spectral", "agglomerative"])
def test_diarize(benchmark, audio, clustering):
    vad, encoder = load_vad("cpu"), load_embedding()
    opts = DiarizeOptions(clustering=clustering)
    turns = benchmark.pedantic(lambda: diarize_signal(audio, opts, vad=vad, encoder=encoder), rounds=1, iterations=1)
    name = f"polyasr.diarize ({clustering})"
    record(GROUP, BASELINE, name, benchmark)
    _rtf(name, benchmark, audio)
    note(GROUP, f"{name}: {len({t.speaker for t in turns})} speakers, {len(turns)} turns")


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
    _rtf(name, benchmark, audio)
    note(GROUP, f"{name}: {len(turns)} turns (random weights: the count means nothing)")


def test_der_of_the_fixture():
    metrics = pytest.importorskip("pyannote.metrics.diarization")
    from pyannote.core import Annotation, Segment

    def annotation(turns):
        ann = Annotation()
        for start, end, speaker in turns:
            ann[Segment(start, end)] = speaker
        return ann

    rows = [line.split() for line in (FIXTURES / "diarize_2spk.rttm").read_text().splitlines()]
    ref = annotation([(float(f[3]), float(f[3]) + float(f[4]), f[7]) for f in rows])
    signal = load_audio(FIXTURES / "diarize_2spk.flac")
    uem = annotation([(0.0, len(signal) / 16000, "all")]).get_timeline()
    for kw in ({"num_speakers": 2}, {}, {"clustering": "agglomerative"}):
        turns = diarize_signal(signal, DiarizeOptions(**kw))
        der = metrics.DiarizationErrorRate(collar=0.25)(ref, annotation(turns), uem=uem)
        note("diarization error rate, diarize_2spk, collar 0.25 s", f"{kw or 'estimated, spectral'}: {der:.4f}")
