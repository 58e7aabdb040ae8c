"""Forced alignment end to end on a random-weight Qwen3-ForcedAligner: `engine.align`, `polyasr align`
in every output format, its bad-input errors (one line, never a traceback), Qwen3-ASR's word
timestamps through the aligner, and `--aligner` timing another model's transcript."""

from __future__ import annotations

import json

import pytest
from qwen3_aligner_refs import aligner_config, aligner_tokenizer, build_aligner, save_aligner
from qwen3_asr_refs import build_reference, make_tokenizer, save_checkpoint, small_config

from polyasr import AsrEngine, TranscribeOptions
from polyasr.cli import main
from polyasr.errors import InvalidOptionError, ModelNotFoundError
from polyasr.outputs import FORMATS

pytest.importorskip("transformers.models.qwen3_asr")  # only to build the random reference weights

ALIGNER = "qwen3-forced-aligner-0.6b"


@pytest.fixture(scope="module")
def aligner_dir(tmp_path_factory):
    tok = aligner_tokenizer()
    cfg = aligner_config(tok)
    return save_aligner(build_aligner(cfg, seed=1), cfg, tok, tmp_path_factory.mktemp("al") / "qwen", "qwen")


@pytest.fixture(scope="module")
def aligner(aligner_dir):
    return AsrEngine.from_model(ALIGNER, aligner_dir, device="cpu")


@pytest.fixture(scope="module")
def asr_dir(tmp_path_factory):
    tok = make_tokenizer()
    cfg = small_config(tok)
    return save_checkpoint(build_reference(cfg, seed=5), cfg, tok, tmp_path_factory.mktemp("asr") / "q", "qwen")


def _run(capsys, argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code, err, exit_code, *fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("polyasr: error: ") and "Traceback" not in err, err
    assert code == exit_code, lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_engine_align_gives_a_segment_per_line(aligner, fixtures_dir):
    text = "The weather was cold this morning,\n\n so I wore a warm coat and walked to the station.\n"
    result = aligner.align(fixtures_dir / "en_short.wav", text, "en")
    assert [s.text for s in result.segments] == [
        " The weather was cold this morning,",
        " so I wore a warm coat and walked to the station.",
    ]
    for s in result.segments:
        assert "".join(w.text for w in s.words) == s.text
        assert s.start == s.words[0].start and s.end == s.words[-1].end
    words = [w for s in result.segments for w in s.words]
    assert all(0 <= w.start <= w.end <= result.audio_duration_secs for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert result.language == "en" and result.info["checkpoint_format"] == "qwen-safetensors"
    assert result.text == " ".join(s.text.strip() for s in result.segments)


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_align_writes_every_format(capsys, aligner_dir, fixtures_dir, tmp_path, fmt):
    args = ["align", fixtures_dir / "ru_short.wav", f"@{fixtures_dir / 'ru_short.txt'}", "--model", ALIGNER]
    args += ["--model-path", aligner_dir, "--device", "cpu", "--language", "Russian", "--format", fmt]
    code, out, _ = _run(capsys, args + (["--max-words-per-line", "3"] if fmt in ("srt", "vtt") else []))
    assert code == 0 and out.strip()
    if fmt == "json":
        result = json.loads(out)
        words = [w for s in result["segments"] for w in s["words"]]
        assert result["model_name"] == ALIGNER and len(words) == 13 and words[0]["text"] == " Сегодня"
    if fmt == "srt":
        assert out.count(" --> ") == 5  # 13 words, 3 a cue
    code, _, _ = _run(capsys, args + ["--output", tmp_path / f"out.{fmt}"])
    assert code == 0 and (tmp_path / f"out.{fmt}").read_text(encoding="utf-8").strip()


@pytest.mark.parametrize(
    "text,extra,fragments",
    [
        ("", [], ["no words"]),
        (" ... ?! ", [], ["no words"]),
        ("@/nonexistent/words.txt", [], ["does not exist"]),
        ("hello", ["--language", "cs"], ["cannot align language 'cs'", "ru (Russian)"]),
        ("こんにちは", ["--language", "ja"], ["nagisa"]),
        (" ".join(["word"] * 80), [], ["80 words", "far longer"]),
    ],
)
def test_cli_align_bad_input_is_one_line(capsys, aligner_dir, fixtures_dir, text, extra, fragments):
    args = ["align", fixtures_dir / "en_short.wav", text, "--model-path", aligner_dir, "--device", "cpu", *extra]
    code, _, err = _run(capsys, args)
    _one_line_error(code, err, 2, *fragments)


def test_cli_align_refuses_audio_longer_than_the_classes(capsys, aligner_dir, fixtures_dir):
    args = ["align", fixtures_dir / "en_medium.wav", "some words", "--model-path", aligner_dir, "--device", "cpu"]
    code, _, err = _run(capsys, args)
    _one_line_error(code, err, 2, "13.8 s", "at most 8 s")


def test_an_aligner_does_not_transcribe_and_a_transcriber_does_not_align(aligner, fixtures_dir, asr_dir):
    with pytest.raises(InvalidOptionError, match="forced aligner"):
        aligner.transcribe_file(fixtures_dir / "en_short.wav")
    asr = AsrEngine.from_model("qwen3-asr-0.6b", asr_dir, device="cpu")
    with pytest.raises(InvalidOptionError, match="does not align"):
        asr.align(fixtures_dir / "en_short.wav", "hello", "en")


def test_qwen3_asr_word_timestamps_run_the_aligner(capsys, asr_dir, aligner_dir, fixtures_dir):
    args = ["transcribe", fixtures_dir / "en_short.wav", "--model", "qwen3-asr-0.6b", "--model-path", asr_dir]
    args += ["--device", "cpu", "--language", "en", "--word-timestamps", "--format", "json"]
    code, out, _ = _run(capsys, args + ["--aligner-path", aligner_dir])
    result = json.loads(out)
    assert code == 0 and result["info"]["aligner"] == ALIGNER and result["segments"]
    for s in result["segments"]:
        assert s["words"] and "".join(w["text"] for w in s["words"]) == s["text"]
        assert all(s["start"] <= w["start"] <= w["end"] <= s["end"] + 0.08 for w in s["words"])


def test_an_aligner_that_is_not_one_is_refused(capsys, asr_dir, fixtures_dir):
    args = ["transcribe", fixtures_dir / "en_short.wav", "--model", "qwen3-asr-0.6b", "--model-path", asr_dir]
    code, _, err = _run(capsys, args + ["--device", "cpu", "--aligner", "qwen3-asr-0.6b", "--aligner-path", asr_dir])
    _one_line_error(code, err, 2, "not a forced aligner")


def test_qwen3_asr_word_timestamps_without_the_aligner_say_what_to_pass(asr_dir, fixtures_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache: the aligner is nowhere
    engine = AsrEngine.from_model("qwen3-asr-0.6b", asr_dir, device="cpu")
    with pytest.raises(ModelNotFoundError, match="--aligner-path"):
        engine.transcribe_file(fixtures_dir / "en_short.wav", TranscribeOptions(word_timestamps=True))


def test_aligner_times_another_models_transcript(capsys, aligner_dir, fixtures_dir, whisper_tiny_en_dir):
    """Whisper tiny.en's transcript, its words timed by the aligner (Whisper's own word pass is not run)."""
    args = ["transcribe", fixtures_dir / "en_short.wav", "--model", "whisper-tiny.en", "--model-path"]
    args += [whisper_tiny_en_dir, "--device", "cpu", "--beam-size", "1", "--format", "json"]
    code, out, _ = _run(capsys, args + ["--aligner", ALIGNER, "--aligner-path", aligner_dir])
    result = json.loads(out)
    assert code == 0 and result["info"]["aligner"] == ALIGNER and "unaligned_segments" not in result["info"]
    assert "weather" in result["text"].lower()
    for s in result["segments"]:
        assert s["words"] and "".join(w["text"] for w in s["words"]) == s["text"]


@pytest.mark.mlx
def test_mlx_backend_gives_the_same_times(aligner, aligner_dir, fixtures_dir):
    pytest.importorskip("mlx.core")
    text = (fixtures_dir / "en_short.txt").read_text()
    mlx = AsrEngine.from_model(ALIGNER, aligner_dir, device="mlx")
    times = [
        [(w.start, w.end) for w in e.align(fixtures_dir / "en_short.wav", text, "en").segments[0].words]
        for e in (aligner, mlx)
    ]
    assert times[0] == times[1]
