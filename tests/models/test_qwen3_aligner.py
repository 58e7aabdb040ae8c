"""Qwen3-ForcedAligner on random weights against transformers' port of Qwen's aligner, in Qwen's
published layout and transformers' layout: the word splitting, the timestamp repair, the prompt,
the slot logits and the word times on the English and Russian fixtures; loading errors; the
words handed back in openai-whisper's convention."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import assert_close, logits_arithmetic
from qwen3_aligner_refs import aligner_config, aligner_tokenizer, build_aligner, reference_align, save_aligner
from qwen3_asr_refs import reference_processor

from polyasr.audio import load_audio
from polyasr.backends.torch import TorchBackend
from polyasr.errors import CheckpointError, WeightsMismatchError
from polyasr.models.qwen3_forced_aligner.checkpoint import load_checkpoint
from polyasr.models.qwen3_forced_aligner.pipeline import ForcedAlignerModel, Piece
from polyasr.models.qwen3_forced_aligner.words import fix_timestamps, split_units, word_texts

pytest.importorskip("transformers.models.qwen3_asr")

TEXTS = [
    "The weather was cold this morning, so I wore a warm coat and walked to the station.",
    "Сегодня хорошая погода, поэтому мы с друзьями пойдём гулять в парк после работы.",
    "  “Don't” — stop!  3.14 e-mail;你好，世界 hello世界x ... ",
    "",
    "?!",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tok = aligner_tokenizer()
    cfg = aligner_config(tok)
    ref = build_aligner(cfg, seed=1)  # a seed whose times vary over the fixtures
    root = tmp_path_factory.mktemp("aligner")
    dirs = {layout: save_aligner(ref, cfg, tok, root / layout, layout) for layout in ("qwen", "transformers")}
    B = TorchBackend("cpu", "float32")
    models = {
        layout: ForcedAlignerModel("qwen3-forced-aligner-0.6b", load_checkpoint(d), B) for layout, d in dirs.items()
    }
    return ref, cfg, tok, dirs, models


@pytest.mark.parametrize("text", TEXTS)
def test_units_are_the_reference_words(text):
    proc = reference_processor(aligner_tokenizer())
    assert [u.text for u in split_units(text)] == proc.split_words_for_alignment(text, "English")


@pytest.mark.parametrize("text", TEXTS)
def test_words_join_to_the_text_with_their_punctuation(text):
    units = split_units(text)
    words = word_texts(text, units)
    assert "".join(words) == text if units else words == [text]
    for unit, word in zip(units, words):
        assert text[unit.start : unit.end] in word  # a unit's own stretch of the text lies in its word


def test_word_text_convention():
    text = ' He said "hello, world." Then 你好，世界!'
    assert word_texts(text, split_units(text)) == [
        " He",
        " said",
        ' "hello,',
        ' world."',
        " Then",
        " 你",
        "好，",
        "世",
        "界!",
    ]


def test_timestamp_repair_equals_the_reference():
    from transformers.models.qwen3_asr.processing_qwen3_asr import _fix_timestamps

    rs = np.random.RandomState(0)
    for n in [1, 2, 3, 5, 8, 13, 40, 101]:
        for _ in range(30):
            trend = np.sort(rs.randint(0, 60, n))
            noisy = np.where(rs.rand(n) < 0.3, rs.randint(0, 60, n), trend)  # runs of outliers of every length
            raw = (noisy.astype(np.float32) * np.float32(80.0)).astype(np.float32)
            assert fix_timestamps(raw) == _fix_timestamps(raw), raw.tolist()


@pytest.mark.parametrize("layout", ["qwen", "transformers"])
@pytest.mark.parametrize("name,language", [("en_short", "English"), ("ru_short", "Russian")])
def test_word_times_equal_the_reference(setup, fixtures_dir, layout, name, language):
    ref, cfg, tok, _, models = setup
    model = models[layout]
    audio = load_audio(fixtures_dir / f"{name}.wav")
    text = (fixtures_dir / f"{name}.txt").read_text()
    expected, ref_ids = reference_align(ref, tok, audio, text, language)

    piece = Piece(audio, split_units(text))
    ours_ids = model.prompt(ref_ids.count(model.tok.audio_pad), piece.units)
    assert ours_ids == ref_ids

    proc = reference_processor(tok)
    prompt = "<|audio_start|><|audio_pad|><|audio_end|>" + "".join(
        f"{u.text}<timestamp><timestamp>" for u in piece.units
    )
    inputs = proc(text=[prompt], audio=[audio], return_tensors="pt")
    with torch.no_grad():
        theirs = ref(**inputs).logits[0][inputs["input_ids"][0] == cfg["timestamp_token_id"]]
    ours = model.slot_logits([piece])
    assert_close(ours, theirs, **logits_arithmetic(model.cfg), what=f"timestamp slot logits ({layout}, {name})")
    assert ours.argmax(-1).tolist() == theirs.argmax(-1).tolist()

    out = model.align(audio, text, language)
    words = out.segments[0].words
    assert [(w.start, w.end) for w in words] == [(e["start_time"], e["end_time"]) for e in expected]
    assert [u.text for u in piece.units] == [e["text"] for e in expected]
    assert "".join(w.text for w in words) == " " + text.strip() == out.segments[0].text
    assert all(0 < w.probability <= 1 for w in words)
    assert len({w.start for w in words}) > 1  # the times vary: the slots are told apart


def test_times_from_constructed_logits_equal_the_reference_decoding(setup):
    """Known slot logits (classes rising with outliers) through our decoding and transformers'
    `decode_forced_alignment`: the same slots, classes, repair and rounding."""
    _, cfg, tok, _, models = setup
    model, proc, rs = models["qwen"], reference_processor(tok), np.random.RandomState(3)
    text = TEXTS[0] + " " + TEXTS[1]
    units = split_units(text)
    n, classes = 2 * len(units), cfg["num_labels"]
    wanted = np.where(rs.rand(n) < 0.25, rs.randint(0, classes, n), np.sort(rs.randint(0, classes, n)))
    logits = rs.randn(n, classes).astype(np.float32)
    logits[np.arange(n), wanted] += 10
    ids = model.prompt(5, units)
    full = torch.zeros(1, len(ids), classes)
    full[0, torch.tensor(ids) == cfg["timestamp_token_id"]] = torch.from_numpy(logits)
    expected = proc.decode_forced_alignment(
        full, torch.tensor([ids]), [[u.text for u in units]], cfg["timestamp_token_id"]
    )
    ours = model.times_from_logits(logits, [Piece(np.zeros(16000, np.float32), units)])[0]
    assert [t[:2] for t in ours] == [(e["start_time"], e["end_time"]) for e in expected[0]]
    assert len({t[0] for t in ours}) > len(units) // 2


def test_a_batch_of_pieces_times_each_as_alone(setup, fixtures_dir):
    *_, models = setup
    model = models["qwen"]
    pieces = []
    for name in ("en_short", "ru_short"):
        audio = load_audio(fixtures_dir / f"{name}.wav")
        pieces.append(Piece(audio[: len(audio) * 2 // 3], split_units((fixtures_dir / f"{name}.txt").read_text())[:9]))
    alone = [model.time_units([p], 1, {})[0] for p in pieces]
    together = model.time_units(pieces, 2, {})
    assert [[t[:2] for t in r] for r in together] == [[t[:2] for t in r] for r in alone]
    assert np.allclose([t[2] for r in together for t in r], [t[2] for r in alone for t in r], atol=1e-4)


def test_checkpoint_errors_name_the_tensor_or_field(setup, tmp_path):
    ref, cfg, tok, dirs, _ = setup
    bad = save_aligner(ref, cfg, tok, tmp_path / "q", "qwen", drop=("thinker.lm_head.weight",))
    with pytest.raises(WeightsMismatchError, match="thinker.lm_head.weight"):
        load_checkpoint(bad)
    bad = save_aligner(ref, cfg, tok, tmp_path / "h", "transformers", drop=("score.weight",))
    with pytest.raises(WeightsMismatchError, match="score.weight"):
        load_checkpoint(bad)
    config = json.loads((dirs["qwen"] / "config.json").read_text())
    del config["thinker_config"]["classify_num"]
    (tmp_path / "c").mkdir()
    for f in dirs["qwen"].iterdir():
        (tmp_path / "c" / f.name).write_bytes(f.read_bytes())
    (tmp_path / "c" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="classify_num"):
        load_checkpoint(tmp_path / "c")
