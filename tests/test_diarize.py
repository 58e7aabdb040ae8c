"""Speaker diarization: options, turns, assignment to transcript items, outputs, and the whole
pipeline on espeak-ng conversations of two, three and four speakers (tests/fixtures/diarize_*spk.*,
made by make_diarize_fixtures.py).

The reference turns run from each turn's first to its last sound, so they include the pauses
between sentences of one turn that the VAD rightly leaves out (in the two-speaker conversation
five of 0.3-0.5 s: about 2 s of 35 missed whatever the speakers, 6 % of the DER). Bounds: DER <=
10 % with the number of speakers given, <= 15 % estimated by either clustering (pyannote.metrics,
collar 0.25 s), and the number of speakers found.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
import soundfile as sf

from polyasr.cli import main
from polyasr.diarization import (
    DiarizeOptions,
    SpeakerTurn,
    assign_speakers,
    cluster,
    diarize,
    speaker_runs,
    speaker_turns,
)
from polyasr.errors import InvalidOptionError
from polyasr.options import TranscribeOptions
from polyasr.outputs import format_result
from polyasr.result import Segment, TranscriptionResult

Word = namedtuple("Word", "start end word")


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"num_speakers": 2, "min_speakers": 1}, "not both"),
        ({"num_speakers": 2, "max_speakers": 3}, "not both"),
        ({"min_speakers": 3, "max_speakers": 2}, "more than max_speakers"),
        ({"num_speakers": 0}, "num_speakers must be a whole number >= 1"),
        ({"max_speakers": 1.5}, "max_speakers"),
        ({"clustering": "kmeans"}, "clustering"),
        ({"embedding": "ecapa"}, "embedding"),
        ({"step_secs": 3.0}, "step_secs"),
    ],
)
def test_bad_options(kw, match):
    with pytest.raises(InvalidOptionError, match=match):
        DiarizeOptions(**kw)


def test_transcribe_options_check_speaker_counts_up_front():
    with pytest.raises(InvalidOptionError, match="more than max_speakers"):
        TranscribeOptions(diarize=True, min_speakers=3, max_speakers=2)
    assert TranscribeOptions(diarize=True, num_speakers=2).diarize_options().num_speakers == 2


def test_more_speakers_than_windows_is_an_error():
    x = np.eye(4, 8)
    with pytest.raises(InvalidOptionError, match="only 4 speech window"):
        cluster(x, DiarizeOptions(num_speakers=5))
    assert cluster(x[:1], DiarizeOptions()).tolist() == [0]


@pytest.mark.parametrize("method", ["spectral", "agglomerative"])
def test_clusters_and_counts_of_separated_points(method):
    """Three tight groups of unit vectors: found with the count estimated, bounded and given."""
    rng = np.random.default_rng(0)
    centres = np.eye(3, 16)
    x = np.repeat(centres, [12, 8, 10], axis=0) + 0.1 * rng.standard_normal((30, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    truth = np.repeat([0, 1, 2], [12, 8, 10])
    for kw, count in [({}, 3), ({"min_speakers": 2, "max_speakers": 3}, 3), ({"num_speakers": 2}, 2)]:
        labels = cluster(x, DiarizeOptions(clustering=method, **kw))
        assert len(set(labels)) == count, kw
        if count == 3:  # the same partition as the truth
            assert len(set(zip(labels.tolist(), truth.tolist()))) == 3, kw
    assert len(set(cluster(x[:12], DiarizeOptions(clustering=method)))) == 1


def test_turns_meet_at_overlap_midpoints_and_merge():
    spans = [[(0.0, 1.6), (0.8, 2.4), (1.6, 3.2), (2.4, 3.0)], [(5.0, 5.5)]]
    labels = np.array([4, 4, 7, 7, 4])
    assert speaker_turns(spans, labels) == [
        SpeakerTurn(0.0, 2.0, "SPEAKER_00"),  # windows 0-1, handing over at (1.6 + 2.4) / 2
        SpeakerTurn(2.0, 3.0, "SPEAKER_01"),
        SpeakerTurn(5.0, 5.5, "SPEAKER_00"),  # another region: a turn of its own
    ]


def test_items_get_the_speaker_covering_most_of_them():
    turns = [
        SpeakerTurn(0.0, 2.0, "SPEAKER_00"),
        SpeakerTurn(2.0, 3.0, "SPEAKER_01"),
        SpeakerTurn(3.5, 4, "SPEAKER_00"),
    ]
    words = [Word(0.1, 0.5, "a"), Word(1.8, 2.4, "b"), Word(1.9, 2.3, "c"), Word(2.9, 3.9, "d"), Word(5, 6, "e")]
    # b: 0.2 s of 00, 0.4 s of 01; c: 0.1 vs 0.3; d: 0.1 s of 01, 0.4 s of 00 (over the gap); e: nobody
    speakers = assign_speakers(words, turns)
    assert speakers == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_01", "SPEAKER_00", None]
    assert assign_speakers(words, []) == [None] * 5
    assert speaker_runs(speakers) == [(0, 1, "SPEAKER_00"), (1, 3, "SPEAKER_01"), (3, 5, "SPEAKER_00")]
    assert speaker_runs([None, "A", "A", None, "B"]) == [(0, 4, "A"), (4, 5, "B")]


def test_outputs_carry_speaker_labels():
    segments = [Segment(0.0, 1.5, " Hello there.", 0.9, speaker="SPEAKER_00"), Segment(1.6, 3.0, " Hi.", 0.8)]
    segments[1].speaker = "SPEAKER_01"
    result = TranscriptionResult("Hello there. Hi.", segments, "en", "m", 3.0, 0.1, 0.03)
    assert format_result(result, "text") == "[SPEAKER_00]: Hello there.\n[SPEAKER_01]: Hi.\n"
    assert "00:00:01,600 --> 00:00:03,000\n[SPEAKER_01]: Hi." in format_result(result, "srt")
    assert "00:00:00.000 --> 00:00:01.500\n[SPEAKER_00]: Hello there." in format_result(result, "vtt")
    assert '"speaker": "SPEAKER_01"' in format_result(result, "json")
    assert "(conf 0.90) [SPEAKER_00]: Hello there." in format_result(result, "verbose")
    segments[0].speaker = segments[1].speaker = None
    assert format_result(result, "text") == "Hello there. Hi.\n"


# ---------------------------------------------------------------- the whole pipeline


def _annotation(turns):
    from pyannote.core import Annotation, Segment

    ann = Annotation()
    for start, end, speaker in turns:
        ann[Segment(start, end)] = speaker
    return ann


def _der(reference_rttm, turns) -> float:
    metrics = pytest.importorskip("pyannote.metrics.diarization")
    ref = []
    for line in reference_rttm.read_text().splitlines():
        f = line.split()
        ref.append((float(f[3]), float(f[3]) + float(f[4]), f[7]))
    hyp = _annotation(turns)
    ref = _annotation(ref)
    uem = _annotation([(0.0, sf.info(reference_rttm.with_suffix(".flac")).duration, "all")]).get_timeline()
    return metrics.DiarizationErrorRate(collar=0.25)(ref, hyp, uem=uem)


def test_no_speech_gives_no_turns(fixtures_dir):
    assert diarize(fixtures_dir / "silence.wav") == []
    assert diarize(np.zeros(0, dtype=np.float32)) == []


@pytest.fixture(scope="module")
def conversations(fixtures_dir):
    """Each fixture conversation's speaker count -> (its stem, windows, embeddings), embedded once."""
    from polyasr.audio import load_audio
    from polyasr.diarization import embed_speech

    out = {}
    for count in (2, 3, 4):
        stem = fixtures_dir / f"diarize_{count}spk"
        out[count] = (stem, *embed_speech(load_audio(stem.with_suffix(".flac")), DiarizeOptions()))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("count", [2, 3, 4])
@pytest.mark.parametrize(
    "kw, bound",
    [({"given": True}, 0.10), ({"clustering": "spectral"}, 0.15), ({"clustering": "agglomerative"}, 0.15)],
    ids=["count given", "spectral estimate", "agglomerative estimate"],
)
def test_conversations_diarized(conversations, count, kw, bound):
    """With the real GE2E weights: the right number of speakers, and the DER within its bound."""
    pytest.importorskip("sklearn")
    stem, spans, embeddings = conversations[count]
    opts = DiarizeOptions(num_speakers=count) if kw.get("given") else DiarizeOptions(**kw)
    turns = speaker_turns(spans, cluster(embeddings, opts))
    assert len({t.speaker for t in turns}) == count
    assert _der(stem.with_suffix(".rttm"), turns) <= bound


@pytest.mark.slow
@pytest.mark.parametrize("method", ["spectral", "agglomerative"])
def test_cli_two_speakers_estimated(fixtures_dir, capsys, method):
    pytest.importorskip("sklearn")
    assert main(["diarize", str(fixtures_dir / "diarize_2spk.flac"), "--clustering", method]) == 0
    lines = capsys.readouterr().out.splitlines()
    fields = [line.split() for line in lines]
    assert all(f[0] == "SPEAKER" and f[1] == "diarize_2spk" and f[5:7] == ["<NA>", "<NA>"] for f in fields)
    turns = [(float(f[3]), float(f[3]) + float(f[4]), f[7]) for f in fields]
    assert len({t[2] for t in turns}) == 2
    assert _der(fixtures_dir / "diarize_2spk.rttm", turns) <= 0.15


def test_cli_bad_counts_are_one_line(fixtures_dir, capsys):
    assert main(["diarize", str(fixtures_dir / "en_short.wav"), "--num-speakers", "0"]) != 0
    err = capsys.readouterr().err.strip()
    assert "num_speakers" in err and "\n" not in err
    assert main(["diarize", str(fixtures_dir / "en_short.wav"), "--min-speakers", "3", "--max-speakers", "2"]) != 0
    assert "more than max_speakers" in capsys.readouterr().err


@pytest.mark.slow
def test_transcribe_with_diarize_labels_segments(whisper_tiny_en_engine, fixtures_dir):
    """Whisper tiny.en's segments of the conversation: each one that lies inside one reference turn
    gets that turn's speaker (under one consistent renaming)."""
    pytest.importorskip("sklearn")
    options = TranscribeOptions(diarize=True, num_speakers=2, temperatures=(0.0,))
    result = whisper_tiny_en_engine.transcribe_file(fixtures_dir / "diarize_2spk.flac", options)
    assert "diarize" in result.timings
    ref = []
    for line in (fixtures_dir / "diarize_2spk.rttm").read_text().splitlines():
        f = line.split()
        ref.append((float(f[3]), float(f[3]) + float(f[4]), f[7]))
    pairs = set()
    for seg in result.segments:
        inside = [spk for s, e, spk in ref if min(e, seg.end) - max(s, seg.start) >= 0.8 * (seg.end - seg.start)]
        if inside:
            pairs.add((inside[0], seg.speaker))
    assert len(pairs) == 2 and len({p[1] for p in pairs}) == 2, pairs


@pytest.mark.parametrize("method", ["spectral", "agglomerative"])
def test_three_windows_cluster(method):
    """A few seconds of speech at a 0.75 s step are three windows: too few for any pruned fraction
    to keep two neighbours per row, so the affinity keeps two."""
    pytest.importorskip("sklearn")
    x = np.repeat(np.eye(2, 8), [2, 1], axis=0) + 0.05 * np.random.default_rng(0).standard_normal((3, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for opts in (DiarizeOptions(clustering=method), DiarizeOptions(clustering=method, num_speakers=2)):
        labels = cluster(x, opts)
        assert labels.shape == (3,) and labels[0] == labels[1]


@pytest.mark.slow
def test_transcribe_with_diarize_labels_words(whisper_tiny_en_engine, fixtures_dir):
    """The three-speaker conversation: every word lies in one reference turn, so its true speaker is
    known; Whisper tiny.en's words (word timestamps) get the right speaker under one renaming, but
    for words Whisper places across a turn change (at most 5 %)."""
    pytest.importorskip("sklearn")
    stem = fixtures_dir / "diarize_3spk"
    options = TranscribeOptions(diarize=True, word_timestamps=True, temperatures=(0.0,))
    result = whisper_tiny_en_engine.transcribe_file(stem.with_suffix(".flac"), options)
    ref = [(float(f[3]), float(f[3]) + float(f[4]), f[7]) for f in map(str.split, stem.with_suffix(".rttm").open())]
    words = [w for seg in result.segments for w in seg.words]
    pairs = []
    for w in words:
        true = [spk for s, e, spk in ref if s <= (w.start + w.end) / 2 <= e]
        pairs.append((true[0] if true else None, w.speaker))
    named = [p for p in pairs if p[0] is not None]
    spoken = [line.split(": ", 1)[1] for line in stem.with_suffix(".txt").read_text().splitlines()]
    assert len(named) >= 0.9 * len(" ".join(spoken).split())  # Whisper heard (nearly) every word
    renaming = {}
    for true, _ in named:  # each true speaker's most frequent label
        labels = [got for t, got in named if t == true]
        renaming[true] = max(set(labels), key=labels.count)
    assert len(set(renaming.values())) == 3, renaming
    wrong = [p for p in named if renaming[p[0]] != p[1]]
    assert len(wrong) <= 0.05 * len(named), wrong
    assert all(seg.speaker == seg.words[0].speaker for seg in result.segments if seg.words)


def test_long_recordings_cluster_centroids(monkeypatch):
    """Past MAX_CLUSTER_POINTS windows the clustering runs on k-means centroids: the same groups."""
    import polyasr.diarization as diarization

    rng = np.random.default_rng(1)
    x = np.repeat(np.eye(3, 16), [300, 150, 150], axis=0) + 0.1 * rng.standard_normal((600, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    truth = np.repeat([0, 1, 2], [300, 150, 150])
    monkeypatch.setattr(diarization, "MAX_CLUSTER_POINTS", 60)
    for method in ("spectral", "agglomerative"):
        labels = cluster(x, DiarizeOptions(clustering=method))
        assert len(set(labels)) == 3 and len(set(zip(labels.tolist(), truth.tolist()))) == 3, method


def test_transcribe_cli_flags_reach_the_options():
    from polyasr.cli import _build_parser, _options

    args = _build_parser().parse_args(
        ["transcribe", "a.wav", "--diarize", "--min-speakers", "2", "--max-speakers", "3"]
    )
    opts = _options(args)
    assert opts.diarize and (opts.min_speakers, opts.max_speakers, opts.num_speakers) == (2, 3, None)
    assert not _options(_build_parser().parse_args(["transcribe", "a.wav"])).diarize


def test_a_segment_is_split_where_its_words_change_speaker():
    from polyasr.diarization import split_at_speaker_changes
    from polyasr.result import Segment, Word

    words = [
        Word(0.0, 0.4, " Hello", 0.9, "SPEAKER_00"),
        Word(0.4, 0.8, " there.", 0.7, "SPEAKER_00"),
        Word(1.0, 1.3, " Hi", 0.5, "SPEAKER_01"),
        Word(1.3, 1.5, " back.", 0.3, None),  # no turn covers it: it stays with the run before
    ]
    segment = Segment(0.0, 1.5, " Hello there. Hi back.", 0.6, [1, 2, 3], "SPEAKER_00", words)
    first, second = split_at_speaker_changes(segment)
    assert (first.start, first.end, first.text, first.speaker) == (0.0, 0.8, " Hello there.", "SPEAKER_00")
    assert (second.start, second.end, second.text, second.speaker) == (1.0, 1.5, " Hi back.", "SPEAKER_01")
    assert first.words == words[:2] and second.words == words[2:] and first.tokens == second.tokens == []
    assert abs(first.confidence - 0.8) < 1e-9
    unsplit = Segment(0.0, 0.8, " Hello there.", 0.8, [1, 2], "SPEAKER_00", words[:2])
    assert split_at_speaker_changes(unsplit) == [unsplit]


def test_default_clustering_follows_the_embedding():
    assert DiarizeOptions().method() == "agglomerative"
    assert DiarizeOptions(embedding="wespeaker-resnet34").method() == "spectral"
    assert DiarizeOptions(clustering="spectral").method() == "spectral"


_MEMORY_PROBE = """
import os, sys, time
import numpy as np, psutil, torch
import polyasr.diarization as D
from polyasr.audio import load_audio
from polyasr.benchmark import peak_rss_mb

torch.set_num_threads(1)  # a memory probe: no thread pool contending with the other tests
stem, minutes, step = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
piece = load_audio(stem + ".flac")
turns = [(round(float(f[3]) * 16000), round((float(f[3]) + float(f[4])) * 16000)) for f in map(str.split, open(stem + ".rttm"))]
rng = np.random.default_rng(0)
parts, total = [], 0
while total < minutes * 60 * 16000:  # random turns, each with noise of its own, and random pauses
    a, b = turns[rng.integers(len(turns))]
    parts += [piece[a:b] + 3e-3 * rng.standard_normal(b - a).astype(np.float32), np.zeros(rng.integers(4000, 16000), np.float32)]
    total += len(parts[-2]) + len(parts[-1])
audio = np.concatenate(parts)
del parts
from polyasr.vad import load_vad
vad, encoder = load_vad("cpu"), D.load_embedding()
opts = D.DiarizeOptions(step_secs=step)
D.diarize_signal(piece, opts, vad=vad, encoder=encoder)  # warm: lazy buffers, imports
if os.path.exists("/proc/self/clear_refs"):  # VmHWM := VmRSS: the peak below is the call's, not the signal's making
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
before = psutil.Process().memory_info().rss
t0 = time.perf_counter()
found = D.diarize_signal(audio, opts, vad=vad, encoder=encoder)
seconds = time.perf_counter() - t0
peak = peak_rss_mb() * 2**20 - before  # this process's own peak (VmHWM), not the test process's
print(len(audio), peak, len({t.speaker for t in found}), seconds)
"""


@pytest.mark.slow
def test_one_hour_conversation_diarizes_in_bounded_memory(fixtures_dir):
    """An hour of conversation (random turns of the four-speaker fixture with noise and pauses)
    diarizes at the default LSTM batch and clustering sizes, every window step 1.6 s so the hour
    fits a CI run: the peak beyond a 1-minute run's is no more than the hour's own copies of its
    signal (the samples, their volume-normalised copy and the VAD's: 12 bytes a sample) and 64 MB
    (the per-window embeddings, 1 KiB each, and allocator noise). Memory is bounded by one LSTM
    batch, one region's mel and the clustering's MAX_CLUSTER_POINTS, not by the length: the hour's
    time and peak at the default step are in bench/bench_diarize.py."""
    import subprocess
    import sys

    pytest.importorskip("sklearn")
    pytest.importorskip("psutil")
    stem = str(fixtures_dir / "diarize_4spk")
    growth = {}
    for minutes in (1, 60):
        out = subprocess.run(
            [sys.executable, "-c", _MEMORY_PROBE, stem, str(minutes), "1.6"], capture_output=True, text=True, check=True
        ).stdout.split()
        growth[minutes] = (int(out[0]), float(out[1]), int(out[2]), float(out[3]))
    (n1, g1, *_), (n60, g60, speakers, _) = growth[1], growth[60]
    assert n60 >= 3600 * 16000 and speakers == 4, growth  # the k-means centroid path keeps the four voices
    assert g60 - g1 <= 12 * (n60 - n1) + 64 * 2**20, growth
