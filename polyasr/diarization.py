"""Speaker diarization: who spoke when.

    import polyasr
    polyasr.diarize("meeting.wav")                    # [SpeakerTurn(start=0.52, end=3.1, speaker="SPEAKER_00"), ...]
    polyasr.diarize(samples, num_speakers=2)
    polyasr.diarize(samples, min_speakers=2, max_speakers=4, clustering="spectral")

The pipeline: Silero VAD speech regions (`polyasr.vad`) -> sliding windows over each region
(`window_secs` long, every `step_secs`; a region shorter than a window is one window of its own)
-> one speaker embedding per window (Resemblyzer's GE2E voice encoder, or WeSpeaker's ResNet34 as
pyannote uses it, on polyasr's backends) ->
clustering of the embeddings (agglomerative with a cosine-distance threshold, or spectral, the
number of speakers from the eigen-gap of the affinity's Laplacian; `num_speakers` fixes
the count, `min_speakers` / `max_speakers` bound it, as pyannote's pipeline takes them) ->
speaker turns: where two windows of a region overlap the boundary is their midpoint, adjacent
spans of one speaker merge. Each stretch of speech gets exactly one speaker: overlapping speech
goes to whichever voice dominates the window's embedding.

With a transcript, `assign_speakers` gives each segment (or word: anything with `start` and
`end` in seconds) the speaker whose turns cover most of it, and `speaker_runs` splits a sequence
of words where the speaker changes.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import os
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from polyasr.audio import SAMPLE_RATE, load_audio, validate_samples
from polyasr.errors import InvalidOptionError

# name -> the encoder class ("module:Class"), imported on first use
_ENCODERS = {
    "resemblyzer": "polyasr.models.resemblyzer_ge2e.pipeline:VoiceEncoder",
    "wespeaker-resnet34": "polyasr.models.wespeaker_resnet.pipeline:WeSpeakerEncoder",
}
EMBEDDINGS = tuple(_ENCODERS)
# (window_secs, step_secs) per embedding: resemblyzer's own partial utterances are 1.6 s; WeSpeaker's
# diarization recipe (VAD, sliding windows, clustering, as here) embeds 1.5 s every 0.75 s.
# pyannote's 10 s chunks need its segmentation model's per-speaker masks, which this pipeline lacks.
DEFAULT_WINDOWS = {"resemblyzer": (1.6, 0.4), "wespeaker-resnet34": (1.5, 0.75)}
CLUSTERINGS = ("spectral", "agglomerative")
# The clustering used when none is asked for. GE2E: agglomerative at its threshold, which estimated
# the speaker count right on every conversation tried, where the eigen-gap of the spectral affinity
# undercounts once speakers' turns are shuffled or many (bench/bench_diarize.py, tests/test_diarize.py).
# WeSpeaker: spectral, which needs no distance threshold tuned on its real weights.
DEFAULT_CLUSTERING = {"resemblyzer": "agglomerative", "wespeaker-resnet34": "spectral"}


class SpeakerTurn(NamedTuple):
    """One speaker talking from `start` to `end` (seconds from the beginning of the audio)."""

    start: float
    end: float
    speaker: str


@dataclass(frozen=True)
class DiarizeOptions:
    """num_speakers: the exact number of speakers, when known; else the number is estimated within
        [min_speakers, max_speakers] (each optional).
    clustering: "spectral" (eigen-gap estimate) or "agglomerative" (average linkage on cosine
        distance, cut at `threshold`); None: the embedding's default, `DEFAULT_CLUSTERING`.
    window_secs, step_secs: the sliding windows embedded over each speech region (None: the
        embedding's default, `DEFAULT_WINDOWS`).
    embedding: the speaker-embedding network, "resemblyzer" (GE2E) or "wespeaker-resnet34";
        embedding_path: its weights (None: resemblyzer's from its installed package, WeSpeaker's
        from the Hugging Face cache).
    """

    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    clustering: str | None = None
    threshold: float = 0.4
    window_secs: float | None = None
    step_secs: float | None = None
    embedding: str = "resemblyzer"
    embedding_path: str | None = None

    def __post_init__(self):
        for name in ("num_speakers", "min_speakers", "max_speakers"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidOptionError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.num_speakers is not None and (self.min_speakers is not None or self.max_speakers is not None):
            raise InvalidOptionError("give either num_speakers or min_speakers / max_speakers, not both")
        if self.min_speakers is not None and self.max_speakers is not None and self.min_speakers > self.max_speakers:
            raise InvalidOptionError(
                f"min_speakers ({self.min_speakers}) is more than max_speakers ({self.max_speakers})"
            )
        if self.clustering is not None and self.clustering not in CLUSTERINGS:
            raise InvalidOptionError(f"clustering must be one of {', '.join(CLUSTERINGS)}, got {self.clustering!r}")
        if self.embedding not in EMBEDDINGS:
            raise InvalidOptionError(f"embedding must be one of {', '.join(EMBEDDINGS)}, got {self.embedding!r}")
        if not 0 < self.threshold < 2:
            raise InvalidOptionError(f"threshold is a cosine distance in (0, 2), got {self.threshold}")
        window, step = self.windows()
        if not 0.5 <= window <= 10:
            raise InvalidOptionError(f"window_secs must be from 0.5 to 10 seconds, got {window}")
        if not 0 < step <= window:
            raise InvalidOptionError(f"step_secs must be > 0 and at most window_secs ({window}), got {step}")

    def method(self) -> str:
        """The clustering: the one asked for, else the embedding's default."""
        return self.clustering or DEFAULT_CLUSTERING[self.embedding]

    def windows(self) -> tuple[float, float]:
        """(window_secs, step_secs), the embedding's defaults where not given."""
        window, step = DEFAULT_WINDOWS[self.embedding]
        return (window if self.window_secs is None else self.window_secs), (
            step if self.step_secs is None else self.step_secs
        )


@functools.lru_cache(maxsize=4)
def load_embedding(name: str = "resemblyzer", path: str | None = None, device: str = "cpu"):
    """The speaker-embedding network `name` on `device`, loaded once per process, in fp32."""
    from polyasr.backends import get_backend

    return encoder_class(name).load(get_backend(device, dtype="float32"), path)


def encoder_class(name: str):
    """The encoder class of embedding `name` (imported now; the model packages import no framework)."""
    if name not in EMBEDDINGS:
        raise InvalidOptionError(f"embedding must be one of {', '.join(EMBEDDINGS)}, got {name!r}")
    module, cls = _ENCODERS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def diarize(
    audio,
    sample_rate: int = SAMPLE_RATE,
    *,
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    embedding: str | None = None,
    embedding_path: str | os.PathLike | None = None,
    options: DiarizeOptions | None = None,
    device: str = "cpu",
    encoder=None,
    vad=None,
) -> list[SpeakerTurn]:
    """Speaker turns of one recording (a path, or samples at `sample_rate`), in time order; no
    speech gives []. The speaker counts, the embedding and its path override `options`' when given."""
    opts = options or DiarizeOptions()
    if num_speakers is not None or min_speakers is not None or max_speakers is not None:
        opts = DiarizeOptions(**{**opts.__dict__, "num_speakers": num_speakers, "min_speakers": min_speakers,
                                 "max_speakers": max_speakers})  # fmt: skip
    if embedding is not None or embedding_path is not None:
        chosen = {"embedding": embedding} if embedding is not None else {}
        if embedding_path is not None:
            chosen["embedding_path"] = os.fspath(embedding_path)
        opts = DiarizeOptions(**{**opts.__dict__, **chosen})
    signal = load_audio(audio) if isinstance(audio, (str, os.PathLike)) else _samples(audio, sample_rate)
    return diarize_signal(signal, opts, device=device, encoder=encoder, vad=vad)


def _samples(audio, sample_rate: int) -> np.ndarray:
    if np.asarray(audio).size == 0:
        return np.zeros(0, dtype=np.float32)
    return validate_samples(audio, source_rate=sample_rate)


def diarize_signal(signal: np.ndarray, opts: DiarizeOptions, *, device: str = "cpu", encoder=None, vad=None):
    """`diarize` of 16 kHz mono float32 samples."""
    spans, embeddings = embed_speech(signal, opts, device=device, encoder=encoder, vad=vad)
    return speaker_turns(spans, cluster(embeddings, opts)) if spans else []


def embed_speech(signal: np.ndarray, opts: DiarizeOptions, *, device: str = "cpu", encoder=None, vad=None):
    """The windows of 16 kHz samples' speech and their embeddings: (each VAD region's list of window
    (start, end) seconds, (windows, E) L2-normalised embeddings in the same order); ([], None)
    without speech."""
    from polyasr.vad import load_vad, speech_timestamps

    regions = speech_timestamps(signal, vad=vad or load_vad(device)) if len(signal) else []
    if not regions:
        return [], None
    encoder = encoder or load_embedding(opts.embedding, opts.embedding_path, device)
    if encoder.target_dbfs is not None:
        signal = _normalize_volume(signal, encoder.target_dbfs)
    spans, starts = [], []
    for start, end in regions:
        region_starts, length = _window_starts(end - start, opts, encoder.cfg.hop)
        starts.append(region_starts)
        spans.append([((start + s) / SAMPLE_RATE, min(start + s + length, end) / SAMPLE_RATE) for s in region_starts])
    return spans, encoder.embed_regions([signal[start:end] for start, end in regions], starts, length)


def _normalize_volume(signal: np.ndarray, target_dbfs: float) -> np.ndarray:
    """Raise quiet audio to `target_dbfs` RMS, never lower loud audio: resemblyzer's `preprocess_wav`
    does this before embedding, and its network reads mel power, whose scale follows the gain (an
    encoder declares its `target_dbfs`, None where the gain does not matter)."""
    # in float64 (float32 sums of an hour of squares drift), a million samples at a time (no
    # float64 copy of the whole signal)
    power = sum(
        float(np.dot(c, c)) for c in (signal[i : i + 2**20].astype(np.float64) for i in range(0, len(signal), 2**20))
    )
    rms = math.sqrt(power / len(signal))
    if rms == 0:
        return signal
    gain_db = target_dbfs - 20 * math.log10(rms)
    return signal * np.float32(10 ** (gain_db / 20)) if gain_db > 0 else signal


def _window_starts(n_samples: int, opts: DiarizeOptions, hop: int) -> tuple[list[int], int]:
    """(window starts in a region of n_samples, window length), on the encoder's frame grid; the last
    window ends with the region, a region shorter than a window is one window."""
    window_secs, step_secs = opts.windows()
    length = round(window_secs * SAMPLE_RATE / hop) * hop
    step = max(1, round(step_secs * SAMPLE_RATE / hop)) * hop
    if n_samples <= length:
        return [0], length
    starts = list(range(0, n_samples - length + 1, step))
    last = (n_samples - length) // hop * hop
    if starts[-1] < last:
        starts.append(last)
    return starts, length


# ---------------------------------------------------------------- clustering


def cluster(embeddings: np.ndarray, opts: DiarizeOptions) -> np.ndarray:
    """L2-normalised embeddings (N, E) -> a cluster index per row (N,)."""
    n = len(embeddings)
    for name in ("num_speakers", "min_speakers"):
        count = getattr(opts, name)
        if count is not None and count > n:
            raise InvalidOptionError(
                f"{name}={count}, but the audio has only {n} speech window(s) of {opts.windows()[0]:g} s to tell apart"
            )
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    from threadpoolctl import threadpool_limits

    # The matrices are at most MAX_CLUSTER_POINTS square: one BLAS thread finishes each eigen-
    # decomposition in a fraction of a second, while several, on cores that other work shares,
    # wait for each other at every step (bench/bench_diarize.py measures both).
    with threadpool_limits(limits=1, user_api="blas"):
        if n > MAX_CLUSTER_POINTS:
            return _clustered_centroids(embeddings, opts)
        lo = opts.num_speakers or opts.min_speakers or 1
        hi = opts.num_speakers or min(opts.max_speakers or n, n)
        if opts.method() == "agglomerative":
            return _agglomerative(embeddings, opts.threshold, lo, hi)
        return _spectral(embeddings, lo, hi)


# Both clusterings hold N x N matrices and spectral's diffusion and eigen-decomposition cost N^3:
# beyond this many windows (about 7 minutes of speech at the default step) they cluster centroids.
MAX_CLUSTER_POINTS = 1000


def _clustered_centroids(x: np.ndarray, opts: DiarizeOptions) -> np.ndarray:
    """Long recordings: k-means into MAX_CLUSTER_POINTS fine clusters (each far smaller than a
    speaker's share), the chosen clustering over their normalised centroids, and each window the
    label of its centroid; memory and time stay linear in the windows."""
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(n_clusters=MAX_CLUSTER_POINTS, n_init=1, random_state=0, batch_size=4096).fit(x)
    centroids = km.cluster_centers_ / np.linalg.norm(km.cluster_centers_, axis=1, keepdims=True)
    return cluster(centroids.astype(np.float32), opts)[km.labels_]


def _agglomerative(x: np.ndarray, threshold: float, lo: int, hi: int) -> np.ndarray:
    """Average linkage on cosine distance, cut at `threshold`; a count outside [lo, hi] is clamped."""
    from sklearn.cluster import AgglomerativeClustering

    def fit(**kw):
        return AgglomerativeClustering(metric="cosine", linkage="average", **kw).fit_predict(x)

    labels = fit(n_clusters=None, distance_threshold=threshold) if lo != hi else fit(n_clusters=lo)
    k = labels.max() + 1
    return labels if lo <= k <= hi else fit(n_clusters=min(max(k, lo), hi))


def affinity(x: np.ndarray, keep: float) -> np.ndarray:
    """The refined cosine affinity of Wang et al. (2018), "Speaker Diarization with LSTM": cosine
    similarities (negative ones cut to 0), in each row all but the largest `keep` fraction damped to
    1 %, symmetrised by max, diffused (Y Y^T) and each row scaled to a maximum of 1, then symmetrised
    again so the Laplacian is defined."""
    sim = np.clip(x @ x.T, 0.0, None)
    np.fill_diagonal(sim, 1.0)
    cut = np.percentile(sim, 100 * (1 - keep), axis=1, keepdims=True)
    sim = np.where(sim >= cut, sim, 0.01 * sim)
    sim = np.maximum(sim, sim.T)
    sim = sim @ sim.T
    sim = sim / sim.max(axis=1, keepdims=True)
    return (sim + sim.T) / 2


def eigengap(aff: np.ndarray, lo: int, hi: int) -> tuple[int, float]:
    """(k in [lo, hi] at the largest gap between consecutive eigenvalues of the symmetric normalised
    Laplacian, that gap): k well separated clusters give k eigenvalues near 0, then a jump."""
    d = 1.0 / np.sqrt(aff.sum(axis=1))
    eig = np.linalg.eigvalsh(np.eye(len(aff)) - d[:, None] * aff * d[None, :])
    hi = max(lo, min(hi, len(aff) - 1))
    gaps = eig[lo : hi + 1] - eig[lo - 1 : hi]  # gaps[i]: between eigenvalues lo + i - 1 and lo + i (0-based)
    return lo + int(np.argmax(gaps)), float(gaps.max())


# Fractions of each row the affinity keeps, tried in turn: the best depends on how many windows
# each speaker has, which is what is unknown.
_KEEP = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


def _spectral(x: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Spectral clustering of the refined affinity. The kept fraction is tuned per recording, in the
    spirit of Park et al. (2019, "Auto-Tuning Spectral Clustering for Speaker Diarization"): the
    one whose affinity has the clearest eigen-gap (Park's ratio of fraction to gap favours graphs so
    sparse that they fall apart on a few dozen windows), at least two neighbours per row; the number
    of speakers is that affinity's eigen-gap count."""
    from sklearn.cluster import SpectralClustering

    n = len(x)
    best = None
    for keep in [k for k in _KEEP if k * n >= 2] or [min(1.0, 2 / n)]:  # few windows: keep two per row
        aff = affinity(x, keep)
        count, gap = eigengap(aff, lo, hi)
        if best is None or gap > best[0]:
            best = (gap, count, aff)
    _, k, aff = best
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    return SpectralClustering(n_clusters=k, affinity="precomputed", random_state=0).fit_predict(aff)


# ---------------------------------------------------------------- turns and assignment


def speaker_turns(spans: list[list[tuple[float, float]]], labels: np.ndarray) -> list[SpeakerTurn]:
    """Windows (each region's (start, end) seconds, in order) and their cluster labels -> turns.
    Within a region, two overlapping windows meet at the midpoint of their overlap; adjacent spans of
    one speaker merge. Speakers are named SPEAKER_00, SPEAKER_01, ... in order of first appearance."""
    names: dict[int, str] = {}
    turns: list[SpeakerTurn] = []
    i = 0
    for windows in spans:
        region_labels = labels[i : i + len(windows)]
        i += len(windows)
        for j, ((start, end), label) in enumerate(zip(windows, region_labels)):
            if j > 0:
                start = _boundary(windows[j - 1], windows[j])
            if j + 1 < len(windows):
                end = _boundary(windows[j], windows[j + 1])
            name = names.setdefault(int(label), f"SPEAKER_{len(names):02d}")
            if j > 0 and turns[-1].speaker == name:
                turns[-1] = turns[-1]._replace(end=round(end, 3))
            else:
                turns.append(SpeakerTurn(round(start, 3), round(end, 3), name))
    return turns


def _boundary(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Where window a hands over to the next window b: the middle of their overlap."""
    return (b[0] + a[1]) / 2 if b[0] < a[1] else a[1]


def assign_speakers(items, turns: list[SpeakerTurn]) -> list[str | None]:
    """The speaker of each item (anything with `start` and `end` in seconds: segments, words): the
    one whose turns overlap it longest; None where no turn touches it."""
    if not turns:
        return [None for _ in items]
    t_start = np.array([t.start for t in turns])
    t_end = np.array([t.end for t in turns])
    speakers = sorted({t.speaker for t in turns})
    index = np.array([speakers.index(t.speaker) for t in turns])
    out: list[str | None] = []
    for item in items:
        overlap = np.clip(np.minimum(t_end, item.end) - np.maximum(t_start, item.start), 0.0, None)
        per_speaker = np.bincount(index, weights=overlap, minlength=len(speakers))
        out.append(speakers[int(np.argmax(per_speaker))] if per_speaker.max() > 0 else None)
    return out


def speaker_runs(speakers: list[str | None]) -> list[tuple[int, int, str | None]]:
    """Where the speaker of consecutive items (words) changes: [(first, last + 1, speaker), ...]. An
    item without a speaker stays in the run before it (the first run's speaker for leading ones)."""
    runs: list[list] = []
    for i, speaker in enumerate(speakers):
        if runs and (speaker is None or speaker == runs[-1][2] or runs[-1][2] is None):
            runs[-1][1] = i + 1
            runs[-1][2] = runs[-1][2] or speaker
        else:
            runs.append([i, i + 1, speaker])
    return [tuple(r) for r in runs]


def split_at_speaker_changes(segment) -> list:
    """A segment whose words (with their speakers set) change speaker -> one segment per run of
    words, each with its words' bounds, text and speaker. Token ids cannot be split by word, so a
    split segment's parts carry none; an unsplit segment is returned as it is."""
    runs = speaker_runs([w.speaker for w in segment.words]) if segment.words else []
    if len(runs) < 2:
        return [segment]
    parts = []
    for first, stop, speaker in runs:
        words = segment.words[first:stop]
        parts.append(
            dataclasses.replace(
                segment,
                start=words[0].start,
                end=words[-1].end,
                text="".join(w.text for w in words),
                confidence=float(np.mean([w.probability for w in words])),
                tokens=[],
                speaker=speaker,
                words=list(words),
            )
        )
    return parts


# ---------------------------------------------------------------- `polyasr diarize`

OUTPUT_FORMATS = ("rttm", "json", "text")


def add_speaker_args(p, diarize_flag: bool = False) -> None:
    """The speaker-count and embedding arguments (`diarize`, and `transcribe --diarize`)."""
    if diarize_flag:
        p.add_argument("--diarize", action="store_true", help="label segments with speakers (SPEAKER_00, ...)")
    p.add_argument("--num-speakers", type=int, default=None, help="the number of speakers, when known")
    p.add_argument("--min-speakers", type=int, default=None, help="at least this many speakers (when estimated)")
    p.add_argument("--max-speakers", type=int, default=None, help="at most this many speakers (when estimated)")
    p.add_argument(
        "--embedding", default=DiarizeOptions.embedding, choices=EMBEDDINGS, help="speaker embedding network"
    )
    p.add_argument(
        "--embedding-path",
        default=None,
        help="its weights: a file or a directory (default: resemblyzer's installed package; "
        "wespeaker-resnet34: pyannote's pytorch_model.bin in the Hugging Face cache)",
    )


def add_cli_parser(sub) -> None:
    """The `diarize` subcommand's arguments (cli.py registers it)."""
    d = sub.add_parser("diarize", help="who spoke when: speaker turns of audio files")
    d.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3)")
    add_speaker_args(d)
    defaults = DiarizeOptions()
    d.add_argument(
        "--clustering",
        default=defaults.clustering,
        choices=CLUSTERINGS,
        help="how windows are grouped into speakers (default: agglomerative for resemblyzer, spectral for "
        "wespeaker-resnet34)",
    )
    d.add_argument("--threshold", type=float, default=defaults.threshold, help="agglomerative: cosine distance cut")
    per_embedding = "; ".join(f"{name}: {w:g} / {s:g} s" for name, (w, s) in DEFAULT_WINDOWS.items())
    d.add_argument("--window-secs", type=float, default=None, help=f"embedding window length ({per_embedding})")
    d.add_argument("--step-secs", type=float, default=None, help="embedding window step")
    d.add_argument("--format", default="rttm", choices=OUTPUT_FORMATS, help="output format (default: rttm)")
    d.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "mlx"), help="backend (default: cpu)")


def cmd_diarize(args) -> int:
    """RTTM (`SPEAKER <file> 1 <start> <duration> <NA> <NA> <speaker> <NA> <NA>`), JSON or text lines."""
    import json
    from pathlib import Path

    from polyasr.audio import check_audio_file

    opts = DiarizeOptions(
        num_speakers=args.num_speakers,
        min_speakers=args.min_speakers,
        max_speakers=args.max_speakers,
        clustering=args.clustering,
        threshold=args.threshold,
        window_secs=args.window_secs,
        step_secs=args.step_secs,
        embedding=args.embedding,
        embedding_path=args.embedding_path,
    )
    for path in args.audio:
        check_audio_file(path)
    found = [(path, diarize(path, options=opts, device=args.device)) for path in args.audio]
    if args.format == "json":
        files = [{"file": p, "turns": [t._asdict() for t in turns]} for p, turns in found]
        print(json.dumps(files if len(files) > 1 else files[0], indent=2))
        return 0
    for path, turns in found:
        if args.format == "rttm":
            uri = Path(path).stem.replace(" ", "_")
            for t in turns:
                print(f"SPEAKER {uri} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> {t.speaker} <NA> <NA>")
            continue
        if len(args.audio) > 1:
            print(f"# {path}")
        for t in turns:
            print(f"{t.start:.3f} {t.end:.3f} {t.speaker}")
    return 0
