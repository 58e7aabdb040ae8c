"""Whisper on VAD speech pieces in batches (`batch_size` > 1, models/whisper/pieces.py).

The pieces' bookkeeping (merging regions, mapping piece time back to the file, cutting a piece at
its timestamp pairs) on hand-made cases; on real base weights, a batch of 8 pieces decodes to the
same text as the same pieces one at a time, and `transcribe_files` batches across files with each
file's result equal to its own batched run.
"""

from __future__ import annotations

import dataclasses

import pytest

from polyasr import TranscribeOptions
from polyasr.audio import audio_duration, load_audio
from polyasr.benchmark import word_error_rate
from polyasr.models.whisper.decode import DecodeResult
from polyasr.models.whisper.pieces import (
    Piece,
    merge_regions,
    piece_segments,
    speech_pieces,
    transcribe_batched,
    undecoded_from,
)
from polyasr.models.whisper.pipeline import WindowLog

SR = 16000


def test_regions_merge_into_pieces_of_at_most_the_limit():
    regions = [(0, 10), (20, 35), (40, 50), (60, 90), (100, 101)]
    pieces = merge_regions(3, regions, max_samples=30)
    assert [p.regions for p in pieces] == [[(0, 10), (20, 35)], [(40, 50)], [(60, 90)], [(100, 101)]]
    assert all(p.file == 3 and p.samples <= 30 for p in pieces)
    assert merge_regions(0, [], 30) == []


def test_piece_time_maps_back_through_its_regions():
    piece = Piece(0, [(SR, 2 * SR), (5 * SR, 7 * SR)])  # 1 s of speech at 1 s, then 2 s at 5 s
    assert piece.file_time(0.0, SR) == 1.0
    assert piece.file_time(0.5, SR) == 1.5
    assert piece.file_time(1.0, SR) == 5.0  # a start on the seam belongs to the next region
    assert piece.file_time(1.0, SR, is_end=True) == 2.0  # an end on the seam to the region it ends
    assert piece.file_time(2.5, SR) == 6.5
    assert piece.file_time(9.0, SR, is_end=True) == 7.0  # past the piece: its end


class _Tok:
    timestamp_begin = 1000


def _result(tokens):
    return DecodeResult(tokens, "", -0.1, 0.0, 0.0, 1.0, [-0.1] * len(tokens))


def test_piece_segments_cut_at_timestamp_pairs_and_keep_trailing_text():
    tb = _Tok.timestamp_begin
    tokens = [tb, 1, 2, tb + 50, tb + 50, 3, tb + 100, tb + 100, 4, 5]  # the last text has no closing stamp
    cut = piece_segments(_Tok, _result(tokens), duration=3.0)
    assert [(s, e, t) for s, e, t, _ in cut] == [
        (0.0, 1.0, [tb, 1, 2, tb + 50]),
        (1.0, 2.0, [tb + 50, 3, tb + 100]),
        (2.0, 3.0, [tb + 100, 4, 5]),
    ]
    (only,) = piece_segments(_Tok, _result([7, 8]), duration=2.5)  # without timestamps: the whole piece
    assert only[:3] == (0.0, 2.5, [7, 8])
    assert piece_segments(_Tok, _result([]), duration=2.5) == []


def test_speech_left_after_an_opened_segment_is_decoded_again():
    """A piece whose tokens end by opening a segment (a timestamp pair, then <|endoftext|>) left the
    speech from the closing stamp on undecoded: the sequential loop would seek there."""
    tb = _Tok.timestamp_begin
    opened = [tb, 1, 2, tb + 1200, tb + 1200]  # closes at 24 s, opens again, stops
    assert undecoded_from(_Tok, _result(opened), duration=27.0) == pytest.approx(24.0)
    assert undecoded_from(_Tok, _result(opened), duration=24.3) is None  # only padding after it
    assert undecoded_from(_Tok, _result([tb, 1, 2, tb + 1200]), duration=27.0) is None  # closed: done
    assert undecoded_from(_Tok, _result([tb, 1, tb + 50, tb + 50, 3, 4]), duration=27.0) == 1.0  # cut text
    assert undecoded_from(_Tok, _result([tb, tb, 1]), duration=27.0) is None  # at 0: would not advance
    assert undecoded_from(_Tok, _result([5, 6]), duration=27.0) is None  # no timestamps
    piece = Piece(0, [(SR, 2 * SR), (5 * SR, 7 * SR)])
    assert piece.after(SR // 2).regions == [(SR + SR // 2, 2 * SR), (5 * SR, 7 * SR)]
    assert piece.after(SR).regions == [(5 * SR, 7 * SR)]
    assert piece.after(SR + SR // 4).regions == [(5 * SR + SR // 4, 7 * SR)]


def test_text_after_the_rest_start_is_left_to_the_rest(whisper_tiny_en_engine):
    """A piece cut after a timestamp pair with text following (no closing stamp): that text is the
    rest's to decode, so the piece keeps only its segments before the pair, as the sequential loop
    drops a window's text after the timestamp it seeks to."""
    from polyasr.models.whisper.pieces import _collect, _Files

    m = whisper_tiny_en_engine.model
    tb, hello, world = m.tok.timestamp_begin, m.tok.encode(" Hello"), m.tok.encode(" world")
    tokens = [tb, *hello, tb + 50, tb + 50, *world]
    result = DecodeResult(tokens, "", -0.1, 0.0, 0.0, 1.0, [-0.1] * len(tokens), finish="length")
    piece = Piece(0, [(0, 4 * SR)])
    rest = undecoded_from(m.tok, result, 4.0)
    assert rest == pytest.approx(1.0)
    files = _Files(["en"], [[]], [1], [0], [0], [[]], [None])
    _collect(m, piece, result, TranscribeOptions(), files, until=rest)
    assert [(s.start, s.end, s.text) for s in files.segments[0]] == [(0.0, 1.0, " Hello")]
    assert piece.after(round(rest * SR)).regions == [(SR, 4 * SR)]


@pytest.mark.slow
def test_pieces_lose_no_speech_where_whisper_stops_early(whisper_base_engine, fixtures_dir):
    """On the fixtures tiled with pauses, base stops a piece by opening a segment it does not
    finish; the rest is decoded as a piece of its own, so batched decoding keeps every sentence
    and matches the sequential windows' WER."""
    import numpy as np

    long, medium = load_audio(fixtures_dir / "en_long.wav"), load_audio(fixtures_dir / "en_medium.wav")
    pause = lambda s: np.zeros(int(s * SR), np.float32)  # noqa: E731
    audio = np.tile(np.concatenate([long, pause(4), medium, pause(8)]), 2)
    text = " ".join((fixtures_dir / f).read_text(encoding="utf-8") for f in ("en_long.txt", "en_medium.txt") * 2)
    opts = TranscribeOptions(language="en", beam_size=1, vad=True)
    batched = whisper_base_engine.transcribe(audio, dataclasses.replace(opts, batch_size=8))
    sequential = whisper_base_engine.transcribe(audio, dataclasses.replace(opts, batch_size=1))
    (made,) = speech_pieces(whisper_base_engine.model, [audio], dataclasses.replace(opts, batch_size=8))
    assert batched.info["speech_pieces"] > len(made)  # the pieces VAD made, and at least one rest
    assert batched.text.count("until it gets dark") == 2
    assert word_error_rate(text, batched.text) <= word_error_rate(text, sequential.text) + 0.005
    starts = [s.start for s in batched.segments]
    assert starts == sorted(starts)


@pytest.mark.slow
def test_batch_of_eight_equals_one_at_a_time(whisper_base_engine, fixtures_dir):
    m = whisper_base_engine.model
    audio = load_audio(fixtures_dir / "en_long.wav")
    opts = TranscribeOptions(language="en", batch_size=8)
    eight = transcribe_batched(m, [audio], opts, WindowLog())
    one = transcribe_batched(m, [audio], dataclasses.replace(opts, batch_size=1), WindowLog())
    assert eight.pieces[0] >= 3, "en_long should give several pieces, or the batch proves nothing"
    assert [(s.start, s.end, s.text) for s in eight.segments[0]] == [(s.start, s.end, s.text) for s in one.segments[0]]
    text = "".join(s.text for s in eight.segments[0])
    assert word_error_rate((fixtures_dir / "en_long.txt").read_text(encoding="utf-8"), text) < 0.15
    duration = audio_duration(audio)
    starts = [s.start for s in eight.segments[0]]
    assert starts == sorted(starts) and all(0 <= s.start < s.end <= duration for s in eight.segments[0])


@pytest.mark.slow
def test_transcribe_files_batches_pieces_across_files(whisper_tiny_en_engine, fixtures_dir):
    files = [fixtures_dir / "en_short.wav", fixtures_dir / "silence.wav", fixtures_dir / "en_medium.wav"]
    opts = TranscribeOptions(batch_size=4)
    together = whisper_tiny_en_engine.transcribe_files(files, opts)
    alone = [whisper_tiny_en_engine.transcribe_file(f, opts) for f in files]
    assert [r.text for r in together] == [r.text for r in alone]
    assert together[1].text == "" and together[1].segments == []
    assert together[0].info["batched_files"] == 3 and together[0].info["speech_pieces"] == 1
    reference = (fixtures_dir / "en_short.txt").read_text(encoding="utf-8")
    assert word_error_rate(reference, together[0].text) < 0.15


@pytest.mark.slow
def test_batched_pieces_carry_words_near_the_sequential_ones(whisper_tiny_en_engine, fixtures_dir):
    """Words of a piece are aligned in the piece's time and mapped to the file's: they join to
    their segment's text, bound it, and land where the sequential pass puts the same words."""
    audio = load_audio(fixtures_dir / "en_short.wav")
    batched = whisper_tiny_en_engine.transcribe(audio, TranscribeOptions(batch_size=2, word_timestamps=True))
    sequential = whisper_tiny_en_engine.transcribe(audio, TranscribeOptions(word_timestamps=True))
    for seg in batched.segments:
        assert seg.words and "".join(w.text for w in seg.words) == seg.text
        assert seg.start == seg.words[0].start and seg.end == seg.words[-1].end
        assert all(w.start <= w.end for w in seg.words)
    ours = [(w.text, w.start) for s in batched.segments for w in s.words]
    theirs = {w.text: w.start for s in sequential.segments for w in s.words}
    shared = [(t, start) for t, start in ours if t in theirs]
    assert len(shared) >= 0.8 * len(ours)
    # One VAD piece starting near 0: the same audio under the same weights, so the same places.
    assert max(abs(start - theirs[t]) for t, start in shared) < 0.2


@pytest.mark.slow
def test_detection_shares_the_batch_encoder_and_cross_attention(whisper_base_engine, fixtures_dir, monkeypatch):
    """Without a forced language, the files of a batch are detected in one decoder step over the
    cross K/V their decoding then uses: one `cross_kv` per batch, each language (and probability)
    the one a window detected alone gets."""
    from polyasr.models.whisper import decode, pieces
    from polyasr.models.whisper import model as net

    m = whisper_base_engine.model
    audios = [load_audio(fixtures_dir / f) for f in ("en_short.wav", "en_medium.wav")]
    cross_calls, detected = [], []
    cross_kv, detect_languages = net.cross_kv, decode.detect_languages

    def spy_cross(params, cfg, B, features):
        cross_calls.append(features.shape[0])
        return cross_kv(params, cfg, B, features)

    def spy_detect(m_, features, cross=None):
        detected.append(features)
        return detect_languages(m_, features, cross)

    monkeypatch.setattr(net, "cross_kv", spy_cross)
    monkeypatch.setattr(pieces, "detect_languages", spy_detect)
    files = transcribe_batched(m, audios, TranscribeOptions(batch_size=8), WindowLog())
    assert sum(files.pieces) <= 8 and cross_calls == [sum(files.pieces)]  # one batch, one cross K/V
    (features,) = detected
    assert features.shape[0] == 2 and files.languages == ["en", "en"]
    monkeypatch.undo()
    for row, probability in enumerate(files.language_probability):
        language, alone = decode.detect_language(m, features[row : row + 1])
        assert language == files.languages[row] and alone == pytest.approx(probability, abs=1e-4)


@pytest.mark.slow
def test_a_full_first_window_is_encoded_once_for_detection_and_decoding(whisper_base_engine, fixtures_dir, monkeypatch):
    """Sequential windows without a forced language: a first window of a full 30 s is the mel the
    detection saw, so its encoder output and cross K/V are reused, and the text is the one decoding
    with that language forced gives."""
    from polyasr.models.whisper import model as net

    audio = load_audio(fixtures_dir / "en_long.wav")[: 34 * SR]  # a full window, then a short one
    encoded, encode = [], net.encode
    monkeypatch.setattr(net, "encode", lambda *a: encoded.append(1) or encode(*a))
    auto = whisper_base_engine.transcribe(audio, TranscribeOptions(batch_size=1))
    assert auto.language == "en" and len(encoded) == auto.info["chunks"]
    forced = whisper_base_engine.transcribe(audio, TranscribeOptions(batch_size=1, language="en"))
    assert [(s.start, s.end, s.text) for s in auto.segments] == [(s.start, s.end, s.text) for s in forced.segments]
    encoded.clear()
    short = whisper_base_engine.transcribe(audio[: 10 * SR], TranscribeOptions(batch_size=1))
    assert len(encoded) == short.info["chunks"] + 1  # a short file's detection sees the padded signal
