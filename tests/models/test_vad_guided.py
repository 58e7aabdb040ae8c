"""VAD-guided transcription without a real model: the speech-chunk planner, the sample-exact time map,
the joined-speech path on a stand-in model (what it is given, where its times land), and options."""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest
from conftest import need_silero_vad
from hypothesis import given, settings
from hypothesis import strategies as st

from polyasr.errors import InvalidOptionError, ModelNotFoundError
from polyasr.models.base import AsrModel, ModelOutput
from polyasr.models.chunking import Chunk, plan_speech_chunks
from polyasr.options import TranscribeOptions
from polyasr.result import Segment
from polyasr.vad import TRANSCRIBE_VAD, VadOptions, load_vad

SR = 16000


# ---- the planner ---------------------------------------------------------------------------------
def test_regions_are_joined_up_to_the_chunk_length_and_cut_between_regions():
    regions = [(16000, 48000), (80000, 112000), (160000, 240000), (400000, 416000)]  # 2 s, 2 s, 5 s, 1 s
    chunks = plan_speech_chunks(regions, 480000, SR, max_secs=6.0)
    assert [c.spans for c in chunks] == [((16000, 48000), (80000, 112000)), ((160000, 240000), (400000, 416000))]
    # each chunk runs from its first region's start to its last one's end and keeps all of it
    assert [c[:4] for c in chunks] == [(16000, 112000, 16000, 112000), (160000, 416000, 160000, 416000)]
    audio = np.arange(480000, dtype=np.float32)
    assert np.array_equal(chunks[0].samples(audio), np.r_[16000:48000, 80000:112000].astype(np.float32))


def test_no_regions_no_chunks_and_touching_regions_are_one_span():
    assert plan_speech_chunks([], 16000 * 60, SR, max_secs=30.0) == []
    (chunk,) = plan_speech_chunks([(0, 100), (100, 300), (500, 600)], 1000, SR, max_secs=1.0)
    assert chunk.spans == ((0, 300), (500, 600))


def test_a_region_longer_than_the_chunk_length_is_cut_at_it():
    (a, b, c) = plan_speech_chunks([(1000, 1000 + 2 * 48000 + 5)], 200000, SR, max_secs=3.0)
    assert (a.spans, b.spans, c.spans) == (((1000, 49000),), ((49000, 97000),), ((97000, 97005),))


def test_regions_out_of_order_are_refused():
    with pytest.raises(InvalidOptionError, match="disjoint and in order"):
        plan_speech_chunks([(500, 900), (100, 200)], 1000, SR, max_secs=1.0)


@st.composite
def region_lists(draw):
    n = draw(st.integers(1, 200000))
    cuts = sorted(set(draw(st.lists(st.integers(0, n), max_size=20))))
    regions = [(a, b) for a, b in zip(cuts[::2], cuts[1::2]) if b > a]
    return regions, n, draw(st.floats(0.05, 5.0))


@settings(max_examples=200, deadline=None)
@given(region_lists())
def test_chunks_hold_exactly_the_speech_and_respect_the_length(case):
    regions, n, max_secs = case
    chunks = plan_speech_chunks(regions, n, SR, max_secs)
    spoken = np.zeros(n, bool)
    for a, b in regions:
        spoken[a:b] = True
    covered = np.zeros(n, int)
    for c in chunks:
        assert sum(b - a for a, b in c.spans) <= int(max_secs * SR)
        assert (c.start, c.end) == (c.spans[0][0], c.spans[-1][1])
        for a, b in c.spans:
            covered[a:b] += 1
    assert np.array_equal(covered, spoken.astype(int))  # every speech sample once, nothing else
    assert all(a.end <= b.start for a, b in zip(chunks, chunks[1:]))


# ---- the time map --------------------------------------------------------------------------------
def test_positions_in_the_joined_speech_map_back_sample_exactly():
    chunk = Chunk(100, 900, 100, 900, ((100, 300), (500, 600), (800, 900)))
    joined = np.arange(400)
    mapped = chunk.to_file(joined)
    assert np.array_equal(mapped, np.r_[100:300, 500:600, 800:900])
    # on a join a start belongs to the later span, an end to the earlier one
    assert chunk.to_file([200, 300]).tolist() == [500, 800]
    assert chunk.to_file([200, 300, 400], end=True).tolist() == [300, 600, 900]
    assert chunk.to_file([0], end=True).tolist() == [100]
    assert chunk.to_file([-5, 10**6]).tolist() == [100, 900]  # clipped to the chunk
    plain = Chunk(50, 90, 60, 90)
    assert plain.to_file([0, 39, 40]).tolist() == [50, 89, 90]


# ---- the joined-speech path, on a stand-in model -------------------------------------------------
class Recorder(AsrModel):
    """Returns one segment per second of whatever it is given, and keeps what it was given."""

    name, format = "recorder", "test"

    def __init__(self):
        from polyasr.backends import get_backend

        self.B, self.given = get_backend("cpu"), []

    def _transcribe(self, audio, opts, progress=None) -> ModelOutput:
        self.given.append(audio)
        starts = np.arange(0, len(audio), SR)
        ends = np.minimum(starts + SR, len(audio))
        segs = [Segment(a / SR, b / SR, f" s{i}", 1.0) for i, (a, b) in enumerate(zip(starts, ends))]
        return ModelOutput(segs, None, checkpoint_format=self.format, timings={"decoder": 0.0})


@pytest.fixture(scope="module")
def speech_after_silence(fixtures_dir):
    """7 s of silence, en_short, 3 s of silence, en_short, 2 s of silence."""
    from polyasr.audio import load_audio

    phrase = load_audio(fixtures_dir / "en_short.wav")
    gap = lambda s: np.zeros(int(s * SR), np.float32)  # noqa: E731
    return np.concatenate([gap(7), phrase, gap(3), phrase, gap(2)])


def test_joined_speech_is_all_the_model_sees_and_its_times_map_back(speech_after_silence):
    need_silero_vad()
    from polyasr.vad import batch_speech_timestamps

    audio = speech_after_silence
    (regions,) = batch_speech_timestamps([audio], options=TRANSCRIBE_VAD)
    assert len(regions) == 2 and regions[0].start >= 7 * SR - 0.4 * SR
    model = Recorder()
    out = model.transcribe(audio, TranscribeOptions(vad=True))
    (given,) = model.given
    assert np.array_equal(given, np.concatenate([audio[a:b] for a, b in regions]))
    # segment k covered joined seconds [k, k + 1): its times are those samples' places in the file
    joined_to_file = np.concatenate([np.arange(a, b) for a, b in regions])
    for k, seg in enumerate(out.segments):
        first, last = k * SR, min((k + 1) * SR, len(given)) - 1
        assert seg.start == round(joined_to_file[first] / SR, 3)
        assert seg.end == round((joined_to_file[last] + 1) / SR, 3)
    assert out.segments[0].start >= 6.6 and out.timings["vad"] > 0


def test_no_speech_gives_an_empty_output_without_calling_the_model(fixtures_dir):
    need_silero_vad()
    from polyasr.audio import load_audio

    model = Recorder()
    out = model.transcribe(load_audio(fixtures_dir / "no_speech_60s.flac"), TranscribeOptions(vad=True))
    assert out.segments == [] and out.chunks == 0 and model.given == []
    assert model.transcribe(np.zeros(0, np.float32), TranscribeOptions(vad=True)).segments == []


def test_vad_cuts_regions_at_the_chunk_length(fixtures_dir):
    """What chunked models rely on: with max_speech_duration_s capped at the chunk length, no region
    is longer than a chunk, so the planner never has to cut inside speech itself."""
    need_silero_vad()
    from polyasr.audio import load_audio
    from polyasr.vad import batch_speech_timestamps

    audio = np.tile(load_audio(fixtures_dir / "en_medium.wav"), 2)
    (uncut,) = batch_speech_timestamps([audio], options=TRANSCRIBE_VAD)
    assert max(b - a for a, b in uncut) > 10 * SR
    for max_secs in (2.5, 4.0):
        opts = VadOptions(min_speech_duration_ms=0, min_silence_duration_ms=2000, max_speech_duration_s=max_secs)
        (regions,) = batch_speech_timestamps([audio], options=opts)
        assert max(b - a for a, b in regions) <= max_secs * SR


# ---- options and missing weights -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"threshold": -0.1}, "threshold"),
        ({"neg_threshold": 0.9}, "neg_threshold"),
        ({"speech_pad_ms": -1}, "speech_pad_ms"),
        ({"min_silence_duration_ms": -5}, "min_silence_duration_ms"),
        ({"max_speech_duration_s": 0.01}, "max_speech_duration_s"),
        ({"speech_padding": 3}, "speech_padding"),
    ],
)
def test_bad_vad_options_name_the_option(options, named):
    with pytest.raises(InvalidOptionError, match=named):
        TranscribeOptions(vad=True, vad_options=options)


def test_vad_options_default_to_faster_whispers_and_keep_given_fields():
    opts = TranscribeOptions(vad=True, vad_options={"threshold": 0.6})
    assert opts.vad_options == VadOptions(
        threshold=0.6, min_speech_duration_ms=0, min_silence_duration_ms=2000, speech_pad_ms=400
    )
    assert TranscribeOptions().vad is False and TranscribeOptions().vad_options == TRANSCRIBE_VAD


def test_cli_vad_flags_are_checked_in_one_line(fixtures_dir, capsys):
    from polyasr.cli import main

    wav = str(fixtures_dir / "silence.wav")
    assert main(["transcribe", wav, "--vad", "--vad-threshold", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "polyasr: error: threshold must be a number from 0 to 1, got -1.0"
    assert main(["transcribe", wav, "--vad-min-silence-ms", "500"]) == 2
    assert capsys.readouterr().err.strip() == "polyasr: error: --vad-min-silence-ms applies only with --vad"


def test_missing_vad_weights_say_which_package_to_install(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", not_installed)
    load_vad.cache_clear()
    try:
        with pytest.raises(ModelNotFoundError, match="pip install silero-vad"):
            Recorder().transcribe(np.zeros(SR, np.float32), TranscribeOptions(vad=True))
    finally:
        load_vad.cache_clear()
