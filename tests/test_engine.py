"""The library API: `AsrEngine.from_model` (enum or id, explicit path or hub cache), `transcribe` on arrays
against `transcribe_file`, the fields of `TranscriptionResult`, option validation, device errors,
the weight-map checks, and that `import polyasr` stays free of torch."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import make_hf_whisper

from polyasr import AsrEngine, ModelType, TranscribeOptions
from polyasr.errors import BackendError, CheckpointError, InvalidOptionError, WeightsMismatchError
from polyasr.models.weight_map import WeightMap, apply_weight_map

FIXTURES = Path(__file__).parent / "fixtures"
SHORT = FIXTURES / "en_short.wav"
STEREO_44K = FIXTURES / "en_short_stereo_44k.flac"
KEY_WORDS = ("weather", "cold", "morning", "coat", "station")


@pytest.fixture(scope="module")
def short_result(whisper_tiny_en_engine):
    return whisper_tiny_en_engine.transcribe_file(SHORT)


# --- building an engine ------------------------------------------------------------------------------


def test_from_model_with_enum(whisper_tiny_en_dir):
    engine = AsrEngine.from_model(ModelType.WHISPER_TINY_EN, whisper_tiny_en_dir, device="cpu")
    assert engine.spec.id == "whisper-tiny.en"
    assert engine.checkpoint == Path(whisper_tiny_en_dir).resolve()
    assert str(engine.backend.device) == "cpu" and engine.load_secs > 0


def test_from_model_with_string_id(whisper_tiny_en_engine, whisper_tiny_en_dir):
    # The session engine is built from the string "whisper-tiny.en" (tests/conftest.py).
    assert whisper_tiny_en_engine.spec.id == ModelType.WHISPER_TINY_EN == "whisper-tiny.en"
    assert whisper_tiny_en_engine.checkpoint == Path(whisper_tiny_en_dir).resolve()


def test_from_model_resolves_from_hub_cache(tmp_path, monkeypatch, whisper_base_dir):
    """A snapshot laid out as huggingface_hub does is found with no path and no network."""
    repo = tmp_path / "hub" / "models--openai--whisper-tiny"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    # whisper-tiny's real dimensions (random weights): the id checks the architecture it loads.
    make_hf_whisper(
        snapshot,
        whisper_base_dir,
        d_model=384,
        encoder_layers=4,
        decoder_layers=4,
        encoder_attention_heads=6,
        decoder_attention_heads=6,
        encoder_ffn_dim=1536,
        decoder_ffn_dim=1536,
    )
    for var in ("HF_HOME", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))

    engine = AsrEngine.from_model("whisper-tiny", device="cpu")
    assert engine.spec.id == "whisper-tiny"
    assert engine.checkpoint.resolve() == snapshot.resolve()
    assert engine.model.format == "hf-safetensors" and engine.model.cfg.d_model == 384


def test_checkpoint_of_another_size_is_refused(random_whisper_dir, whisper_base_dir):
    with pytest.raises(CheckpointError, match=r"not a whisper-large-v3 checkpoint: d_model 64 \(expected 1280\)"):
        AsrEngine.from_model("whisper-large-v3", random_whisper_dir, device="cpu")
    with pytest.raises(CheckpointError, match=r"multilingual True \(expected False\)"):
        AsrEngine.from_model("whisper-base.en", whisper_base_dir, device="cpu")
    engine = AsrEngine.from_model("whisper", random_whisper_dir, device="cpu")  # any Whisper architecture
    assert engine.model.cfg.d_model == 64


def test_unknown_device_is_a_backend_error(whisper_tiny_en_dir):
    with pytest.raises(BackendError, match="unknown device 'tpu'"):
        AsrEngine.from_model("whisper-tiny.en", whisper_tiny_en_dir, device="tpu")


def test_import_polyasr_does_not_import_torch():
    code = (
        "import sys, polyasr, polyasr.cli; "
        "print(sorted(m for m in ('torch', 'mlx', 'transformers', 'triton') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- transcription -----------------------------------------------------------------------------------


def test_result_fields(short_result):
    r = short_result
    assert all(w in r.text.lower() for w in KEY_WORDS), r.text
    assert r.language == "en" and r.model_name == "whisper-tiny.en"
    assert r.audio_duration_secs == pytest.approx(5.683, abs=1e-3)
    assert r.rtf == pytest.approx(r.inference_time_secs / r.audio_duration_secs, rel=1e-3, abs=1e-5)
    assert r.inference_time_secs > 0 and r.timings["total"] > 0 and "load_audio" in r.timings
    assert r.info["device"] == "cpu" and r.info["dtype"] == "float32"
    assert r.segments
    starts = [s.start for s in r.segments]
    assert starts == sorted(starts)
    for s in r.segments:
        assert 0 <= s.start < s.end <= r.audio_duration_secs, (s.start, s.end)
        assert 0 < s.confidence <= 1 and s.tokens
    assert "".join(s.text for s in r.segments).strip() == r.text


def test_int16_array_matches_file(whisper_tiny_en_engine, short_result):
    pcm, rate = sf.read(SHORT, dtype="int16")
    assert pcm.dtype == np.int16 and rate == 16000
    result = whisper_tiny_en_engine.transcribe(pcm, name="en_short")
    assert result.text == short_result.text
    assert result.audio_duration_secs == short_result.audio_duration_secs
    assert "load_audio" not in result.timings


def test_float_stereo_44k_array_is_resampled_like_the_file(whisper_tiny_en_engine):
    samples, rate = sf.read(STEREO_44K, dtype="float32")
    assert samples.shape[1] == 2 and rate == 44100
    from_array = whisper_tiny_en_engine.transcribe(samples, sample_rate=rate)
    from_file = whisper_tiny_en_engine.transcribe_file(STEREO_44K)
    assert from_array.text == from_file.text
    assert all(w in from_array.text.lower() for w in KEY_WORDS), from_array.text
    assert from_array.audio_duration_secs == pytest.approx(5.683, abs=2e-3)


def test_silence_is_empty_not_an_error(whisper_tiny_en_engine):
    result = whisper_tiny_en_engine.transcribe_file(FIXTURES / "silence.wav")
    assert result.text == "" and result.segments == []
    assert result.audio_duration_secs == pytest.approx(5.0) and result.rtf > 0


# --- options -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task": "summarize"}, "task must be one of"),
        ({"temperatures": ()}, "temperatures"),
        ({"temperatures": (0.0, -0.2)}, "temperatures"),
        ({"temperatures": -1}, "temperatures"),
        ({"best_of": 0}, "best_of"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_invalid_options(kwargs, message):
    with pytest.raises(InvalidOptionError, match=message):
        TranscribeOptions(**kwargs)


def test_options_are_normalised():
    opts = TranscribeOptions(temperatures=0.5, language=" EN ")
    assert opts.temperatures == (0.5,) and opts.language == "en"
    assert TranscribeOptions(language="  ").language is None
    assert TranscribeOptions(temperatures=[0, 1]).temperatures == (0.0, 1.0)


# --- weight maps -------------------------------------------------------------------------------------

TABLE = WeightMap(
    rename={"enc.{}.w": "blocks.{}.w", "head.w": "out.w", "step": None},
    fuse={"blocks.{}.qkv": ("enc.{}.q", None, "enc.{}.v")},  # k has no bias: a zero block
)
EXPECTED = {"blocks.0.w": (4, 3), "blocks.1.w": (4, 3), "blocks.0.qkv": (6,), "blocks.1.qkv": (6,), "out.w": (2, 4)}


def _tensors() -> dict[str, np.ndarray]:
    t = {f"enc.{i}.{n}": np.full(2, i + 1, np.float32) for i in (0, 1) for n in "qv"}
    t.update({f"enc.{i}.w": np.zeros((4, 3), np.float32) for i in (0, 1)})
    t.update({"head.w": np.ones((2, 4), np.float32), "step": np.array(7)})
    return t


def _apply(tensors):
    return apply_weight_map(tensors, {k: str(v.dtype) for k, v in tensors.items()}, TABLE, EXPECTED, "ckpt.bin")


def test_weight_map_renames_fuses_and_drops():
    params, dtypes = _apply(_tensors())
    assert set(params) == set(EXPECTED)
    assert all(params[k].shape == shape for k, shape in EXPECTED.items())
    np.testing.assert_array_equal(params["blocks.1.qkv"], [2, 2, 0, 0, 2, 2])
    assert dtypes["blocks.0.qkv"] == "float32"


def test_weight_map_names_missing_tensor():
    tensors = _tensors()
    del tensors["enc.1.w"]
    with pytest.raises(
        WeightsMismatchError, match=r"^ckpt\.bin: missing 1 tensor\(s\): enc\.1\.w \(-> blocks\.1\.w\)$"
    ):
        _apply(tensors)


def test_weight_map_names_missing_fused_source():
    tensors = _tensors()
    del tensors["enc.0.v"]
    with pytest.raises(WeightsMismatchError, match=r"missing tensor 'enc\.0\.v' \(needed to build 'blocks\.0\.qkv'\)"):
        _apply(tensors)


def test_weight_map_names_unexpected_tensor():
    tensors = _tensors() | {"enc.0.stray": np.zeros(1, np.float32)}
    with pytest.raises(WeightsMismatchError, match=r"unexpected 1 tensor\(s\): enc\.0\.stray$"):
        _apply(tensors)


def test_weight_map_names_misshaped_tensor():
    tensors = _tensors() | {"head.w": np.ones((4, 2), np.float32)}
    with pytest.raises(WeightsMismatchError, match=r"shape mismatch: out\.w: checkpoint \(4, 2\) != model \(2, 4\)"):
        _apply(tensors)


def test_weight_map_reports_every_problem_at_once():
    tensors = _tensors() | {"head.w": np.ones((3,), np.float32), "extra": np.zeros(1, np.float32)}
    del tensors["enc.0.w"]
    with pytest.raises(WeightsMismatchError) as exc:
        _apply(tensors)
    message = str(exc.value)
    for part in (
        "missing 1 tensor(s): enc.0.w (-> blocks.0.w)",
        "unexpected 1 tensor(s): extra",
        "out.w: checkpoint (3,)",
    ):
        assert part in message, message


def test_transcribe_files_equals_one_file_at_a_time(whisper_tiny_en_engine, fixtures_dir):
    """Models without batched decoding (Whisper) run the files in turn: the same results, in order."""
    files = [fixtures_dir / "en_short.wav", fixtures_dir / "silence.wav", fixtures_dir / "en_short.wav"]
    opts = TranscribeOptions(temperatures=(0.0,))
    together = whisper_tiny_en_engine.transcribe_files(files, opts)
    alone = [whisper_tiny_en_engine.transcribe_file(f, opts) for f in files]
    assert [r.text for r in together] == [r.text for r in alone] and together[1].text == ""
    assert together[0].text and together[0].text == together[2].text
    assert all("load_audio" in r.timings for r in together)


def test_auto_device_is_mlx_on_apple_silicon_cuda_with_a_gpu_else_cpu(monkeypatch):
    import platform

    import torch

    from polyasr.backends import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device(None) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    has_mlx = importlib.util.find_spec("mlx") is not None
    assert resolve_device("auto") == ("mlx" if has_mlx else "cuda")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")  # an Intel Mac: no Metal MLX
    assert resolve_device("auto") == "cuda"
    assert resolve_device("MLX") == "mlx"  # an explicit choice is taken as it is


def test_forced_language_english_only_whisper(whisper_tiny_en_engine):
    """An English-only Whisper refuses another language (the base class's one check) and reports "en"."""
    with pytest.raises(InvalidOptionError, match=r"whisper-tiny.en \(English\).*'ru'.*supports: en"):
        whisper_tiny_en_engine.transcribe_file(SHORT, TranscribeOptions(language="ru"))
    with pytest.raises(InvalidOptionError, match="only transcribes"):
        whisper_tiny_en_engine.transcribe_file(SHORT, TranscribeOptions(task="translate"))
    assert whisper_tiny_en_engine.model.languages == ("en",)
    assert not whisper_tiny_en_engine.model.capabilities.language_detection


def test_forced_language_multilingual_whisper_follows_its_tokenizer(random_whisper_dir):
    engine = AsrEngine.from_model("whisper", random_whisper_dir, device="cpu")
    assert engine.model.capabilities.translation and "ru" in engine.model.languages
    assert engine.model.languages == tuple(engine.model.tok.languages)
    with pytest.raises(InvalidOptionError, match="'xx'.*supports: en, "):
        engine.model.check_options(TranscribeOptions(language="xx"))
