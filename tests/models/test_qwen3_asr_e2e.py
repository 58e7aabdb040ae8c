"""Qwen3-ASR end to end on random weights in Qwen's published layout (and transformers'): the CLI,
the one-line error naming a missing tensor, silence, batched files equal one by one, long audio in
pieces with per-piece timestamps, and the 1.7B id loading through the same code."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qwen3_asr_refs import build_reference, make_tokenizer, save_checkpoint, small_config

from polyasr import AsrEngine, TranscribeOptions
from polyasr.audio import load_audio
from polyasr.cli import main

pytest.importorskip("transformers.models.qwen3_asr")  # only to build the random reference weights


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    tok = make_tokenizer()
    cfg = small_config(tok)
    ref = build_reference(cfg, seed=5)  # a seed whose pieces end by stop token, loop and length
    root = tmp_path_factory.mktemp("qwen3e2e")
    return {
        "qwen": save_checkpoint(ref, cfg, tok, root / "qwen", "qwen"),
        "transformers": save_checkpoint(ref, cfg, tok, root / "hf", "transformers", keep_lm_head=False),
        "parts": (ref, cfg, tok),
    }


@pytest.fixture(scope="module")
def engine(ckpt):
    return AsrEngine.from_model("qwen3-asr-0.6b", ckpt["qwen"], device="cpu")


@pytest.mark.parametrize("language", [None, "ru"])
def test_cli_transcribes_with_a_published_layout_checkpoint(ckpt, fixtures_dir, capsys, language):
    args = [
        "transcribe",
        str(fixtures_dir / "en_short.wav"),
        "--model",
        "qwen3-asr-0.6b",
        "--model-path",
        str(ckpt["qwen"]),
        "--device",
        "cpu",
        "--format",
        "json",
    ] + (["--language", language] if language else [])
    code = main(args)
    out = json.loads(capsys.readouterr().out)
    assert (
        code == 0 and out["model_name"] == "qwen3-asr-0.6b" and out["info"]["checkpoint_format"] == "qwen-safetensors"
    )
    assert out["info"]["chunks"] == 1 and out["text"] == "".join(s["text"] for s in out["segments"]).strip()
    assert all(s["start"] == 0.0 and s["end"] == 5.683 and 0 < s["confidence"] <= 1 for s in out["segments"])
    if language:
        assert out["language"] == "ru" and out["info"]["chunk_languages"] == ["Russian"]
    assert 0 < out["info"]["first_token_latency_secs"] < out["inference_time_secs"]


def test_translate_is_refused(engine, fixtures_dir):
    from polyasr.errors import InvalidOptionError

    with pytest.raises(InvalidOptionError, match="only transcribes"):
        engine.transcribe_file(fixtures_dir / "en_short.wav", TranscribeOptions(task="translate"))


def test_word_timestamps_need_the_forced_aligner(engine, fixtures_dir, tmp_path, monkeypatch):
    from polyasr.errors import ModelNotFoundError

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache: the aligner is nowhere
    with pytest.raises(ModelNotFoundError, match="qwen3-forced-aligner-0.6b"):
        engine.transcribe_file(fixtures_dir / "en_short.wav", TranscribeOptions(word_timestamps=True))


def test_both_layouts_give_the_same_transcript(ckpt, engine, fixtures_dir):
    audio = load_audio(fixtures_dir / "en_short.wav")
    hf = AsrEngine.from_model("qwen3-asr-0.6b", ckpt["transformers"], device="cpu")
    a, b = engine.transcribe(audio), hf.transcribe(audio)
    assert b.info["checkpoint_format"] == "hf-safetensors"
    assert [s.tokens for s in a.segments] == [s.tokens for s in b.segments] and a.text == b.text


def test_unknown_language_is_a_usage_error(ckpt, fixtures_dir, capsys):
    code = main(
        [
            "transcribe",
            str(fixtures_dir / "en_short.wav"),
            "--model",
            "qwen3-asr-0.6b",
            "--model-path",
            str(ckpt["qwen"]),
            "--language",
            "xx",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "'xx'" in err[0] and "ru (Russian)" in err[0]


def test_checkpoint_missing_tensors_names_them(ckpt, tmp_path, fixtures_dir, capsys):
    ref, cfg, tok = ckpt["parts"]
    gone = ("thinker.audio_tower.layers.1.fc2.weight", "thinker.model.layers.0.self_attn.k_proj.weight")
    path = save_checkpoint(ref, cfg, tok, tmp_path / "broken", "qwen", drop=gone)
    code = main(
        ["transcribe", str(fixtures_dir / "en_short.wav"), "--model", "qwen3-asr-0.6b", "--model-path", str(path)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4 and len(err) == 1 and err[0].startswith("polyasr: error:")
    assert all(name in err[0] for name in gone) and "missing" in err[0]


def test_silence_gives_empty_text(engine, fixtures_dir):
    r = engine.transcribe_file(fixtures_dir / "silence.wav")
    assert r.text == "" and r.segments == [] and r.language is None


def test_batched_files_equal_one_by_one(engine, fixtures_dir):
    audios = [load_audio(fixtures_dir / f) for f in ("en_short.wav", "ru_short.wav", "en_medium.wav")]
    audios.append(audios[0][:7000])  # shorter than 0.5 s: zero-padded to 0.5 s either way
    opts = dict(chunk_secs=6.0, language=None)
    many = engine.model.transcribe_many(audios, TranscribeOptions(batch_size=5, **opts))
    for audio, out in zip(audios, many):
        one = engine.model.transcribe(audio, TranscribeOptions(batch_size=1, **opts))
        assert [(s.start, s.end, s.text, s.tokens) for s in out.segments] == [
            (s.start, s.end, s.text, s.tokens) for s in one.segments
        ]
        assert out.language == one.language
        assert out.extra["repetition_stopped_chunks"] == one.extra["repetition_stopped_chunks"]
    # the batch mixed rows that loop (long enough for Qwen's fix-up to collapse) with rows that stop
    assert [m.extra["repetition_stopped_chunks"] for m in many] == [[], [], [1, 2], []]


def test_long_audio_runs_in_pieces_cut_at_pauses(engine, fixtures_dir):
    audio = load_audio(fixtures_dir / "en_medium.wav")
    r = engine.transcribe(audio, TranscribeOptions(chunk_secs=5.0, batch_size=2, language="en"))
    assert r.info["chunks"] >= 3 and r.language == "en"
    spans = [(s.start, s.end) for s in r.segments]
    assert spans == sorted(spans) and all(0 <= a < b <= 13.823 and b - a <= 5.0 for a, b in spans)
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(spans, spans[1:]))


def test_the_1_7b_id_loads_through_the_same_code(ckpt, fixtures_dir):
    r = AsrEngine.from_model("qwen3-asr-1.7b", ckpt["transformers"], device="cpu").transcribe_file(
        fixtures_dir / "en_short.wav", TranscribeOptions(language="en")
    )
    assert r.model_name == "qwen3-asr-1.7b" and r.language == "en"


def test_repetition_guard_stops_a_loop_keeps_what_came_before_and_marks_it(engine):
    """On noise this model loops on a short phrase up to the token limit; once the run is long enough
    for Qwen's text fix-up to collapse it, the guard stops it, keeps the tokens before the loop (a
    prefix of the unguarded output) and marks the piece."""
    noise = (0.3 * np.random.RandomState(0).randn(16000 * 16)).astype(np.float32)
    guarded = engine.model.recognize([noise])[0].generation
    free = engine.model.recognize([noise], guard=False)[0].generation
    assert guarded.stopped == "repetition" and len(free.tokens) > 4 * len(guarded.tokens)
    assert free.tokens[: len(guarded.tokens)] == guarded.tokens
    info = engine.model.transcribe(noise, TranscribeOptions()).info()
    assert info["repetition_stopped_chunks"] == [0]


def test_engine_and_cli_decode_several_files_together(ckpt, engine, fixtures_dir, capsys):
    """`AsrEngine.transcribe_files` (and the CLI given several files) batches the files' pieces
    together and still gives each file what `transcribe_file` gives it alone."""
    files = [fixtures_dir / f for f in ("en_short.wav", "ru_short.wav")]
    opts = TranscribeOptions(batch_size=4, chunk_secs=6.0)
    together = engine.transcribe_files(files, opts)
    alone = [engine.transcribe_file(f, TranscribeOptions(batch_size=1, chunk_secs=6.0)) for f in files]
    assert [(r.text, r.language, [s.tokens for s in r.segments]) for r in together] == [
        (r.text, r.language, [s.tokens for s in r.segments]) for r in alone
    ]
    code = main(
        [
            "transcribe",
            *map(str, files),
            "--model",
            "qwen3-asr-0.6b",
            "--model-path",
            str(ckpt["qwen"]),
            "--format",
            "json",
            "--batch-size",
            "4",
            "--chunk-secs",
            "6",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and [o["text"] for o in out] == [r.text for r in alone]


def test_forced_language_outside_the_checkpoints_list_is_refused(engine):
    """The checkpoint's `support_languages` (Chinese, English, Russian, German here) decide; a code
    or a name both work."""
    from polyasr.errors import InvalidOptionError

    audio = np.zeros(8000, np.float32)
    with pytest.raises(
        InvalidOptionError, match=r"'fr'.*supports: zh \(Chinese\), en \(English\), ru \(Russian\), de \(German\)"
    ):
        engine.transcribe(audio, TranscribeOptions(language="fr"))
    with pytest.raises(InvalidOptionError, match="'xx'"):
        engine.transcribe(audio, TranscribeOptions(language="xx"))
    assert engine.transcribe(audio, TranscribeOptions(language="German")).language == "de"
