"""Every model on the MLX backend against the torch backend, on the same random-weight
checkpoint: encoder outputs within 1e-4 (fp32) on a padded batch of two utterances, and the same
greedy tokens end to end. Runs on `mlx[cpu]` on Linux; the checkpoints are the model tests' own
writers (GigaAM's .ckpt, Parakeet's .nemo and transformers directory, Qwen's layout, Whisper's HF
safetensors)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close, batch_log_mel_tolerance, encoder_arithmetic, transducer_confidence_tolerance

mx = pytest.importorskip("mlx.core")
pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).parent))  # the model tests' checkpoint writers

from polyasr import AsrEngine, TranscribeOptions  # noqa: E402
from polyasr.audio import load_audio  # noqa: E402


def _pair(model_id, path):
    return AsrEngine.from_model(model_id, path, device="cpu"), AsrEngine.from_model(model_id, path, device="mlx")


def _clips(fixtures_dir, name="en_short.wav"):
    audio = load_audio(fixtures_dir / name)
    return [audio[: 16000 * 2], audio[8000 : 8000 + 16000 * 5 // 4]]  # 2 s and 1.25 s: a padded batch


def _same_tokens(t, m, audio, opts=None):
    a, b = t.transcribe(audio, opts), m.transcribe(audio, opts)
    assert b.info["device"].startswith("mlx") and a.info["device"] == "cpu"
    assert [s.tokens for s in b.segments] == [s.tokens for s in a.segments]
    assert b.text == a.text and b.language == a.language
    assert [(s.start, s.end) for s in b.segments] == [(s.start, s.end) for s in a.segments]
    # a segment's confidence is a mean of probabilities: each moves by p times its logit's error
    conf = lambda r: [s.confidence for s in r.segments]  # noqa: E731
    assert_close(conf(b), conf(a), magnitude=1.0, **encoder_arithmetic(t.model.cfg), what="segment confidences")
    assert a.segments, "the random model emits nothing: the comparison would prove little"
    return a


@pytest.fixture(scope="module")
def gigaam_ckpt(tmp_path_factory):
    pytest.importorskip("omegaconf")
    import torch
    from test_gigaam_checkpoint import save_ckpt, tiny_cfg, v3_state_dict

    torch.manual_seed(0)
    cfg = tiny_cfg(d_model=32)
    return save_ckpt(tmp_path_factory.mktemp("gigaam") / "v3_ctc.ckpt", cfg, v3_state_dict(cfg, bf16_window=True))


@pytest.fixture(scope="module")
def parakeet_parts():
    from parakeet_refs import feature_extractor, random_model, tiny_config, train_sentencepiece

    config = tiny_config(48)
    return random_model(config, seed=3), feature_extractor(config), train_sentencepiece(48)


@pytest.fixture(scope="module")
def parakeet_dir(parakeet_parts, tmp_path_factory):
    from parakeet_refs import write_hf_dir

    return write_hf_dir(*parakeet_parts, tmp_path_factory.mktemp("parakeet"))


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    pytest.importorskip("transformers.models.qwen3_asr")
    from qwen3_asr_refs import build_reference, make_tokenizer, save_checkpoint, small_config

    tok = make_tokenizer()
    cfg = small_config(tok)
    return save_checkpoint(build_reference(cfg, seed=5), cfg, tok, tmp_path_factory.mktemp("qwen") / "q", "qwen")


@pytest.fixture(scope="module")
def gigaam(gigaam_ckpt):
    return _pair("gigaam-v3-ctc", gigaam_ckpt)


@pytest.fixture(scope="module")
def parakeet(parakeet_dir):
    return _pair("parakeet-tdt-v3", parakeet_dir)


@pytest.fixture(scope="module")
def qwen(qwen_dir):
    return _pair("qwen3-asr-0.6b", qwen_dir)


def test_gigaam_features_and_encoder(gigaam, fixtures_dir):
    from polyasr.models.gigaam import model as net

    t, m = (e.model for e in gigaam)
    audios = _clips(fixtures_dir, "ru_short.wav")
    (ft, nt), (fm, nm) = t.features(audios), m.features(audios)
    assert nt.tolist() == nm.tolist()
    tol = batch_log_mel_tolerance(audios, t.cfg.mel_config())
    assert_close(m.B.to_numpy(fm), t.B.to_numpy(ft), tol, what="log-mel (checkpoint's own window and bank)")
    et, lt = net.encode(t.params, t.cfg, t.B, ft, nt)
    em, lm = net.encode(m.params, m.cfg, m.B, fm, nm)
    assert lt.tolist() == lm.tolist()
    for i, n in enumerate(lt):
        ours, ref = m.B.to_numpy(em)[i, :n], t.B.to_numpy(et)[i, :n]
        assert_close(ours, ref, **encoder_arithmetic(t.cfg), what=f"encoder item {i}")


def test_gigaam_same_transcript(gigaam, fixtures_dir):
    _same_tokens(*gigaam, load_audio(fixtures_dir / "ru_short.wav"))


def test_parakeet_features_encoder_and_tdt_loop(parakeet, fixtures_dir):
    t, m = (e.model for e in parakeet)
    audios = _clips(fixtures_dir)
    (ft, nt), (fm, nm) = t.features(audios), m.features(audios)
    assert nt.tolist() == nm.tolist()
    tol = batch_log_mel_tolerance(audios, t.cfg.mel_config())
    assert_close(m.B.to_numpy(fm), t.B.to_numpy(ft), tol, what="log-mel (NeMo: pre-emphasis, per-feature norm)")
    (pt, lt), (pm, lm) = t.encode(audios), m.encode(audios)
    assert lt.tolist() == lm.tolist()
    for i, n in enumerate(lt):
        ours, ref = m.B.to_numpy(pm)[i, :n], t.B.to_numpy(pt)[i, :n]
        assert_close(ours, ref, **encoder_arithmetic(t.cfg), what=f"joint projection {i}")
    host = t.transducer.greedy_host(t.B.to_numpy(pt), lt)  # the C++ loop
    mlx_loop = m.decode(pm, lm)  # MLX: the batched device loop on backend ops
    for h, d in zip(host, mlx_loop, strict=True):
        assert h.tokens.tolist() == d.tokens.tolist() and h.frames.tolist() == d.frames.tolist()
        assert h.durations.tolist() == d.durations.tolist()
        assert_close(d.confidences, h.confidences, transducer_confidence_tolerance(t.cfg), what="confidences")
    assert sum(len(h.tokens) for h in host) > 0


def test_parakeet_stem_in_pieces(parakeet, fixtures_dir, monkeypatch):
    """The stem's pieces (spans of one subsampling unit, context cut off again) on MLX give the
    encoder output torch gives in one pass."""
    from polyasr.models.parakeet import model as net

    t, m = (e.model for e in parakeet)
    audios = _clips(fixtures_dir)
    pt, lt = t.encode(audios)
    assert not m.B.small_blocks  # MLX bounds the stem's pieces by memory alone: STEM_BYTES
    monkeypatch.setattr(net, "STEM_BYTES", 1)
    pm, lm = m.encode(audios)
    assert lt.tolist() == lm.tolist()
    for i, n in enumerate(lt):
        ours, ref = m.B.to_numpy(pm)[i, :n], t.B.to_numpy(pt)[i, :n]
        assert_close(ours, ref, **encoder_arithmetic(t.cfg), what=f"joint projection {i}, stem in pieces")


def test_parakeet_same_transcript(parakeet, fixtures_dir):
    _same_tokens(*parakeet, load_audio(fixtures_dir / "en_short.wav"))


def test_qwen_encoder_and_greedy(qwen, fixtures_dir):
    t, m = (e.model for e in qwen)
    audios = _clips(fixtures_dir)
    (et, nt), (em, nm) = t.encode(audios, {}), m.encode(audios, {})
    assert list(nt) == list(nm)
    assert_close(m.B.to_numpy(em), t.B.to_numpy(et), **encoder_arithmetic(t.cfg), what="audio encoder (packed tokens)")
    pt, pm = t.recognize(audios), m.recognize(audios)  # a left-padded batch on the KV cache
    assert [p.generation.tokens for p in pm] == [p.generation.tokens for p in pt]
    assert [p.generation.stopped for p in pm] == [p.generation.stopped for p in pt]


def test_qwen_same_transcript(qwen, fixtures_dir):
    _same_tokens(*qwen, load_audio(fixtures_dir / "en_short.wav"), TranscribeOptions(language="en"))


def test_whisper_encoder_and_transcript(random_whisper_dir, fixtures_dir):
    from polyasr.models.whisper import model as net

    t, m = _pair("whisper", random_whisper_dir)
    audio = load_audio(fixtures_dir / "en_short.wav")
    cfg = t.model.cfg
    mel = np.random.default_rng(0).standard_normal((2, cfg.num_mel_bins, 2 * cfg.max_source_positions))
    mel = mel.astype(np.float32)
    et = net.encode(t.model.params, t.model.cfg, t.backend, t.backend.asarray(mel))
    em = net.encode(m.model.params, m.model.cfg, m.backend, m.backend.asarray(mel))
    ours, ref = m.backend.to_numpy(em), t.backend.to_numpy(et)
    assert_close(ours, ref, **encoder_arithmetic(t.model.cfg), what="whisper encoder")
    _same_tokens(t, m, audio, TranscribeOptions(language="en", temperatures=(0.0,), beam_size=1))


# Run in a fresh interpreter where any import of torch fails: the MLX path must not need it.
_NO_TORCH = """
import importlib.abc, json, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this process: " + name)

sys.meta_path.insert(0, NoTorch())
from polyasr import AsrEngine, TranscribeOptions

out = {}
for model_id, path, language in json.loads(sys.argv[1]):
    engine = AsrEngine.from_model(model_id, path, device="mlx")
    result = engine.transcribe_file(sys.argv[2], TranscribeOptions(language=language, temperatures=(0.0,), beam_size=1))
    out[path] = [s.tokens for s in result.segments]
out["torch imported"] = "torch" in sys.modules
print(json.dumps(out))
"""


@pytest.mark.slow
def test_mlx_path_imports_no_torch(
    gigaam_ckpt, parakeet_parts, parakeet_dir, qwen_dir, random_whisper_dir, fixtures_dir, tmp_path
):
    """Safetensors checkpoints of all four models (and `polyasr convert` outputs of GigaAM's .ckpt and
    Parakeet's .nemo) load and transcribe on MLX in a process where importing torch fails, with the same
    tokens as the torch backend; GigaAM's .ckpt itself needs no torch either (restricted unpickler)."""
    from parakeet_refs import write_nemo

    from polyasr.cli import main

    nemo = write_nemo(*parakeet_parts, tmp_path / "tiny.nemo")
    for model_id, src, out in (
        ("gigaam-v3-ctc", gigaam_ckpt, tmp_path / "gigaam-st"),
        ("parakeet-tdt-v3", nemo, tmp_path / "parakeet-st"),
    ):
        assert main(["convert", "--model", model_id, "--model-path", str(src), "-o", str(out)]) == 0
    cases = [
        ("whisper", random_whisper_dir, "en"),
        ("gigaam-v3-ctc", tmp_path / "gigaam-st", None),
        ("gigaam-v3-ctc", gigaam_ckpt, None),
        ("parakeet-tdt-v3", parakeet_dir, None),
        ("parakeet-tdt-v3", tmp_path / "parakeet-st", None),
        ("qwen3-asr-0.6b", qwen_dir, "en"),
    ]
    cases = [(m, str(p), lang) for m, p, lang in cases]
    audio = fixtures_dir / "en_short.wav"
    run = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, json.dumps(cases), str(audio)], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got.pop("torch imported") is False
    for model_id, path, language in cases:
        ref = AsrEngine.from_model(model_id, path, device="cpu").transcribe_file(
            audio, TranscribeOptions(language=language, temperatures=(0.0,), beam_size=1)
        )
        assert got[path] == [s.tokens for s in ref.segments], (model_id, path)


def _count_evaluations(B, monkeypatch):
    """Count the MLX backend's graph evaluations: `evaluate` and `any` calls, and host reads
    (`to_numpy`) of an array that no `evaluate` has computed yet (a read of one is a copy)."""
    calls, done = {"n": 0}, set()
    real_eval, real_any, real_read = B.evaluate, B.any, B.to_numpy

    def evaluate(*xs):
        calls["n"] += 1
        done.update(id(x) for x in xs)
        return real_eval(*xs)

    def any_(x):
        calls["n"] += 1
        return real_any(x)

    def to_numpy(x):
        calls["n"] += id(x) not in done
        return real_read(x)

    monkeypatch.setattr(B, "evaluate", evaluate)
    monkeypatch.setattr(B, "any", any_)
    monkeypatch.setattr(B, "to_numpy", to_numpy)
    return calls


def test_decoding_loops_evaluate_at_most_once_per_step(parakeet, qwen, fixtures_dir, monkeypatch):
    """Lazy evaluation used well: the Qwen3 KV-cache loop evaluates once per generated token (plus the
    prefill, features and encoder), the TDT loop once per 8 steps (plus reading its records out)."""
    from polyasr.models.parakeet import decode as tdt
    from polyasr.models.qwen3_asr.decode import DecodeStats

    audios = _clips(fixtures_dir)
    q, stats = qwen[1].model, DecodeStats()
    calls = _count_evaluations(q.B, monkeypatch)
    q.recognize(audios, stats=stats)
    assert stats.steps > 5 and calls["n"] <= stats.steps + 4

    p = parakeet[1].model
    proj, lengths = p.encode(audios)
    steps, real_split = {"n": 0}, tdt._split_steps
    monkeypatch.setattr(tdt, "_split_steps", lambda B, s, b: steps.__setitem__("n", len(s)) or real_split(B, s, b))
    calls = _count_evaluations(p.B, monkeypatch)
    p.decode(proj, lengths)
    records = 5  # tokens, frames, durations, log-probs, emit flags: read once each at the end
    assert steps["n"] >= 16 and calls["n"] <= 2 * (steps["n"] // tdt._SYNC_EVERY + 1) + records
