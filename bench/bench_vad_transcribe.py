"""Transcription with VAD on vs off, all four families, on a file that is two thirds non-speech:
en_medium, the 60 s of silence, noise and tones of tests/fixtures/no_speech_60s.flac, en_medium
again (87.6 s, 27.6 s of it speech). Each model runs the same file with `TranscribeOptions(vad=False)`
(the baseline) and `vad=True`, CPU fp32, the same threads, one round after a warm-up.

Whisper base runs its real weights (greedy, language forced). GigaAM v3 CTC, Parakeet TDT and
Qwen3-ASR run the random-weight checkpoints their tests build, at the tests' small sizes: there the
model is cheap, so the ratio mostly shows what the VAD itself costs against the decoding it saves;
at real sizes the decoded time shrinks with the speech fraction. The VAD's own RTF is printed with
each VAD-on row (the `vad` stage of the result's timings).

Run: `pytest bench/bench_vad_transcribe.py --benchmark-only` (under 3 minutes on 2 idle cores).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, note, record

sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "models"))

from polyasr import AsrEngine, TranscribeOptions  # noqa: E402
from polyasr.audio import load_audio  # noqa: E402

SR = 16000


@pytest.fixture(scope="module", autouse=True)
def _vad_weights():
    """Checked without importing silero_vad, which would set torch to one thread."""
    from importlib import metadata

    try:
        metadata.distribution("silero-vad")
    except metadata.PackageNotFoundError:
        pytest.skip("the VAD weights come from the silero-vad package")


@pytest.fixture(scope="module")
def audio():
    speech = load_audio(FIXTURES / "en_medium.wav")
    return np.concatenate([speech, load_audio(FIXTURES / "no_speech_60s.flac"), speech])


def _gigaam(tmp: Path) -> AsrEngine:
    pytest.importorskip("omegaconf")
    from test_gigaam_checkpoint import save_ckpt, tiny_cfg, v3_state_dict

    torch.manual_seed(0)
    cfg = tiny_cfg()
    return AsrEngine.from_model("gigaam-v3-ctc", save_ckpt(tmp / "v3_ctc.ckpt", cfg, v3_state_dict(cfg)), device="cpu")


def _parakeet(tmp: Path) -> AsrEngine:
    pytest.importorskip("transformers")
    from parakeet_refs import feature_extractor, random_model, tiny_config, train_sentencepiece, write_nemo

    config = tiny_config(48)
    model, fe, sp = random_model(config, seed=3), feature_extractor(config), train_sentencepiece(48)
    return AsrEngine.from_model("parakeet-tdt-v3", write_nemo(model, fe, sp, tmp / "tiny.nemo"), device="cpu")


def _qwen(tmp: Path) -> AsrEngine:
    pytest.importorskip("transformers.models.qwen3_asr")
    from qwen3_asr_refs import build_reference, make_tokenizer, save_checkpoint, small_config

    tok = make_tokenizer()
    cfg = small_config(tok)
    path = save_checkpoint(build_reference(cfg, seed=5), cfg, tok, tmp / "qwen", "qwen")
    return AsrEngine.from_model("qwen3-asr-0.6b", path, device="cpu")


MODELS = {
    "whisper-base (real weights)": None,
    "gigaam-v3-ctc (random, small)": _gigaam,
    "parakeet-tdt-v3 (random, small)": _parakeet,
    "qwen3-asr-0.6b (random, small)": _qwen,
}
_ENGINES: dict[str, AsrEngine] = {}


@pytest.fixture
def engine(request, tmp_path_factory, whisper_base_dir):
    name = request.node.callspec.params["model"]
    if name not in _ENGINES:
        build = MODELS[name]
        _ENGINES[name] = (
            AsrEngine.from_model("whisper-base", whisper_base_dir, device="cpu", dtype="float32")
            if build is None
            else build(tmp_path_factory.mktemp("bench-vad"))
        )
    return _ENGINES[name]


@pytest.mark.parametrize("vad", [False, True], ids=["vad-off", "vad-on"])
@pytest.mark.parametrize("model", list(MODELS))
def test_transcribe(benchmark, engine, audio, model, vad):
    options = TranscribeOptions(vad=vad, language="en" if model.startswith("whisper") else None, temperatures=(0.0,))
    result = benchmark.pedantic(lambda: engine.transcribe(audio, options), rounds=1, iterations=1, warmup_rounds=1)
    seconds = len(audio) / SR
    group = f"{model}, {seconds:.1f} s (27.6 s speech), {torch.get_num_threads()} threads"
    label = "VAD on" if vad else "VAD off"
    record(group, "VAD off", label, benchmark)
    rtf = benchmark.stats.stats.min / seconds
    vad_rtf = f", of which VAD RTF {result.timings['vad'] / seconds:.4f}" if vad else ""
    note(group, f"{label}: RTF {rtf:.4f}{vad_rtf}; {result.info['chunks']} chunks, {len(result.text.split())} words")
    benchmark.extra_info.update(rtf=rtf, chunks=result.info["chunks"])
    if model.startswith("whisper") and vad:
        assert "sister" in result.text.lower()
