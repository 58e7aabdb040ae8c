"""VAD-guided transcription through the engine for all four families: Whisper on real weights (base,
tiny.en), GigaAM, Parakeet and Qwen3-ASR on the random-weight checkpoints their own tests build.

Silence, noise and music (tests/fixtures/no_speech_60s.flac) give empty text, an all-silence file
too, never an error; times stay in the file's time base after the silence is skipped; chunked
models are cut where the VAD's regions say.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import need_silero_vad

from polyasr import AsrEngine, TranscribeOptions
from polyasr.audio import load_audio
from polyasr.cli import main
from polyasr.models.chunking import plan_speech_chunks

SR = 16000
VAD = TranscribeOptions(vad=True)
GAP_BEFORE = 7.0  # seconds of silence before the first phrase


@pytest.fixture(autouse=True)
def _vad_weights():
    need_silero_vad()


@pytest.fixture(scope="module")
def gigaam(tmp_path_factory):
    pytest.importorskip("omegaconf")  # only to write the released layout
    from test_gigaam_checkpoint import save_ckpt, tiny_cfg, v3_state_dict

    torch.manual_seed(0)
    cfg = tiny_cfg()
    path = save_ckpt(tmp_path_factory.mktemp("gigaam") / "v3_ctc.ckpt", cfg, v3_state_dict(cfg))
    return AsrEngine.from_model("gigaam-v3-ctc", path, device="cpu")


@pytest.fixture(scope="module")
def parakeet(tmp_path_factory):
    pytest.importorskip("transformers")
    from parakeet_refs import feature_extractor, random_model, tiny_config, train_sentencepiece, write_nemo

    config = tiny_config(48)
    model, fe, sp = random_model(config, seed=3), feature_extractor(config), train_sentencepiece(48)
    path = write_nemo(model, fe, sp, tmp_path_factory.mktemp("parakeet") / "tiny.nemo")
    return AsrEngine.from_model("parakeet-tdt-v3", path, device="cpu")


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    pytest.importorskip("transformers.models.qwen3_asr")
    from qwen3_asr_refs import build_reference, make_tokenizer, save_checkpoint, small_config

    tok = make_tokenizer()
    cfg = small_config(tok)
    path = save_checkpoint(build_reference(cfg, seed=5), cfg, tok, tmp_path_factory.mktemp("qwen"), "qwen")
    return AsrEngine.from_model("qwen3-asr-0.6b", path, device="cpu")


ENGINES = ["whisper_base_engine", "whisper_tiny_en_engine", "gigaam", "parakeet", "qwen"]


@pytest.fixture(scope="module")
def two_phrases(fixtures_dir):
    """GAP_BEFORE s of silence, en_short, 3 s of silence, en_short, 2 s of silence."""
    phrase = load_audio(fixtures_dir / "en_short.wav")
    gap = lambda s: np.zeros(int(s * SR), np.float32)  # noqa: E731
    return np.concatenate([gap(GAP_BEFORE), phrase, gap(3), phrase, gap(2)])


def speech_chunks(audio, max_secs):
    """The plan a chunked model makes of `audio` with VAD on (the VAD cut at the chunk length)."""
    from polyasr.vad import batch_speech_timestamps

    opts = dataclasses.replace(VAD.vad_options, max_speech_duration_s=max_secs)
    (regions,) = batch_speech_timestamps([audio], options=opts)
    return plan_speech_chunks(regions, len(audio), SR, max_secs)


@pytest.mark.parametrize("name", ENGINES)
def test_silence_noise_and_music_give_empty_text(request, fixtures_dir, name):
    engine = request.getfixturevalue(name)
    for file in ("no_speech_60s.flac", "silence.wav"):
        result = engine.transcribe_file(fixtures_dir / file, VAD)
        assert (result.text, result.segments, result.info["chunks"]) == ("", [], 0), file
        assert result.audio_duration_secs == pytest.approx(60.0 if file.startswith("no_") else 5.0)


@pytest.mark.parametrize("name", ["gigaam", "parakeet"])
def test_without_vad_the_random_weights_do_emit_on_the_no_speech_file(request, fixtures_dir, name):
    """What the test above rules out is real: these models write text on noise when VAD is off."""
    result = request.getfixturevalue(name).transcribe_file(fixtures_dir / "no_speech_60s.flac")
    assert result.text != ""


def test_whisper_segments_stay_in_the_files_time(whisper_tiny_en_engine, fixtures_dir, two_phrases):
    """Real tiny.en weights: the silence is skipped, yet the first segment starts after it (less the
    VAD's 400 ms of padding) and both phrases are transcribed, ending within the file."""
    result = whisper_tiny_en_engine.transcribe(two_phrases, VAD)
    words = (fixtures_dir / "en_short.txt").read_text().lower().split()
    heard = "".join(c for c in result.text.lower() if c.isalnum() or c.isspace()).split()
    assert heard == [w.strip(".,") for w in words] * 2
    assert result.segments[0].start >= GAP_BEFORE - 0.4
    assert result.segments[-1].end <= len(two_phrases) / SR
    assert result.info["chunks"] == 1  # 12 s of speech: one 30 s window instead of one per 30 s of file


@pytest.mark.parametrize("name", ["gigaam", "parakeet"])
def test_ctc_and_tdt_chunks_come_from_the_speech_regions(request, two_phrases, name):
    """chunk_secs 4: each phrase region is cut by the VAD into pieces of at most 4 s; every word the
    random weights emit lies inside the speech chunk that produced it, in the file's time."""
    engine = request.getfixturevalue(name)
    result = engine.transcribe(two_phrases, TranscribeOptions(vad=True, chunk_secs=4.0, batch_size=2))
    chunks = speech_chunks(two_phrases, 4.0)
    assert result.info["chunks"] == len(chunks) >= 4 and chunks[0].start >= (GAP_BEFORE - 0.4) * SR
    spans = [span for c in chunks for span in c.spans]
    assert result.segments, "random weights emit some words on speech"
    for seg in result.segments:
        start, end = round(seg.start * SR), round(seg.end * SR)
        assert any(a <= start < b for a, b in spans), f"word at {seg.start} s is outside the speech"
        assert start < end
    assert result.timings["vad"] > 0


def test_qwen_pieces_are_the_speech_chunks(qwen, two_phrases):
    result = qwen.transcribe(two_phrases, VAD)
    chunks = speech_chunks(two_phrases, 30.0)
    assert result.info["chunks"] == len(chunks) == 1  # both phrases, the silence between left out
    assert [(s.start, s.end) for s in result.segments] == [(chunks[0].start / SR, chunks[0].end / SR)]
    many = qwen.model.transcribe_many([two_phrases, np.zeros(SR, np.float32), two_phrases[: 14 * SR]], VAD)
    alone = [qwen.model.transcribe(a, VAD) for a in (two_phrases, np.zeros(SR, np.float32), two_phrases[: 14 * SR])]
    assert [o.segments for o in many] == [o.segments for o in alone]


def test_cli_vad_run(gigaam, fixtures_dir, capsys):
    code = main(
        [
            "transcribe",
            str(fixtures_dir / "no_speech_60s.flac"),
            "--model",
            "gigaam-v3-ctc",
            "--model-path",
            str(gigaam.checkpoint),
            "--device",
            "cpu",
            "--vad",
            "--vad-threshold",
            "0.6",
            "--format",
            "json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["text"] == "" and out["segments"] == [] and "vad" in out["timings"]


def test_chunks_too_short_for_the_vads_padding_are_an_option_error(gigaam, two_phrases):
    from polyasr.errors import InvalidOptionError

    opts = TranscribeOptions(vad=True, chunk_secs=3.0, vad_options={"speech_pad_ms": 1500})
    with pytest.raises(InvalidOptionError, match=r"chunk_secs.*speech_pad_ms"):
        gigaam.transcribe(two_phrases, opts)
