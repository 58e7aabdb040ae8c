"""Whisper on speech pieces decoded in batches (`TranscribeOptions(batch_size=N)`, N > 1).

faster-whisper's `BatchedInferencePipeline`, on our ops: Silero VAD (`polyasr.vad`, on the model's
backend) finds the speech regions of each file with faster-whisper's batched settings (regions of at
most 30 s, pauses of 160 ms split them); consecutive regions are concatenated, the pauses between
them left out, into pieces of at most 30 s (its `collect_chunks`). Pieces of every file given go
through the encoder `batch_size` at a time, and their decoders step together on one KV cache
(`decode.decode_batch`). A piece's segments come from its own timestamp tokens, mapped back through
its regions to the file's time.

Unlike the sequential path: no piece is conditioned on another's text (condition_on_previous_text
is ignored; an initial_prompt primes every piece), nothing is decoded twice (a piece is decoded
once, whole; text after its last timestamp pair is a segment to the piece's end), and audio the
VAD finds no speech in is never decoded. Unlike faster-whisper's: the temperature fallback runs
(the pieces that fail retry together at the next temperature), each piece samples from its own
generator (so results do not depend on the batch), and the no-speech rule still drops a piece the
model thinks is silence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from polyasr.models.whisper import model as net
from polyasr.models.whisper.decode import (
    TIME_PRECISION,
    decode_batch_with_fallback,
    detect_language,
    detect_languages,
    initial_tokens,
    needs_fallback,
)
from polyasr.models.whisper.features import WhisperFeatures
from polyasr.models.whisper.pipeline import _is_silence, _keep, _segment
from polyasr.result import Word

PIECE_SECS = 30.0
# faster-whisper's batched pipeline: regions no longer than a window, pauses of 160 ms end one
VAD_SETTINGS = {"max_speech_duration_s": PIECE_SECS, "min_silence_duration_ms": 160}
MIN_REST_SECS = 0.5  # the shortest rest of a piece decoded again (`undecoded_from`)


@dataclass
class Piece:
    """Speech regions of one file, [start, end) in its samples, decoded as one concatenated window."""

    file: int
    regions: list[tuple[int, int]]

    @property
    def samples(self) -> int:
        return sum(e - s for s, e in self.regions)

    def audio(self, audio: np.ndarray) -> np.ndarray:
        return np.concatenate([audio[s:e] for s, e in self.regions])

    def after(self, offset: int) -> Piece:
        """The piece from `offset` samples into it (its remaining regions, the first one cut)."""
        regions, into = [], 0
        for s, e in self.regions:
            if into + (e - s) > offset:
                regions.append((s + max(offset - into, 0), e))
            into += e - s
        return Piece(self.file, regions)

    def file_time(self, t: float, sample_rate: int, is_end: bool = False) -> float:
        """Seconds into the piece -> seconds into the file. A time on the seam of two regions is the
        end of the first when `is_end`, else the start of the second."""
        at, into = t * sample_rate, 0
        for i, (s, e) in enumerate(self.regions):
            length = e - s
            last = i == len(self.regions) - 1
            if at < into + length or (is_end and at <= into + length) or last:
                return (s + min(max(at - into, 0), length)) / sample_rate
            into += length
        return 0.0  # no regions: unreachable, a piece always has one


def merge_regions(file: int, regions, max_samples: int) -> list[Piece]:
    """Consecutive regions joined while the piece stays within `max_samples` (no region is longer)."""
    pieces, current, size = [], [], 0
    for s, e in regions:
        if current and size + (e - s) > max_samples:
            pieces.append(Piece(file, current))
            current, size = [], 0
        current.append((int(s), int(e)))
        size += e - s
    if current:
        pieces.append(Piece(file, current))
    return pieces


def speech_pieces(m, audios: list[np.ndarray], opts) -> list[list[Piece]]:
    """Every file's pieces, the VAD running over all files as one batch on the model's backend:
    faster-whisper's batched settings, or the caller's `vad_options` with `vad=True` (regions
    still no longer than a piece)."""
    import dataclasses

    from polyasr.models.vad_guided import speech_regions
    from polyasr.vad import VadOptions

    if opts.vad:
        longest = min(opts.vad_options.max_speech_duration_s, PIECE_SECS)
        settings = dataclasses.replace(opts.vad_options, max_speech_duration_s=longest)
    else:
        settings = VadOptions(**VAD_SETTINGS)
    found = speech_regions(m, audios, settings)
    max_samples = int(PIECE_SECS * m.sample_rate)
    return [merge_regions(i, regions, max_samples) for i, regions in enumerate(found)]


def undecoded_from(tok, result, duration: float) -> float | None:
    """Where in a piece (seconds) the speech its decoding left out starts, or None when it left none.

    Whisper closes a segment and opens the next (a timestamp pair) before <|endoftext|> when it sees
    speech it cannot finish before the window's end; the sequential loop then seeks to the closing
    timestamp and decodes from there, and so must a piece, which is decoded only once. A rest
    shorter than MIN_REST_SECS is left alone (it is mostly the padding after the speech)."""
    tokens, tb = result.tokens, tok.timestamp_begin
    is_ts = [t >= tb for t in tokens]
    if len(tokens) < 2 or is_ts[-2:] == [False, True]:  # ends by closing its last segment: done
        return None
    pairs = [i for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
    if not pairs:
        return None
    start = (tokens[pairs[-1]] - tb) * TIME_PRECISION
    return start if 0 < start <= duration - MIN_REST_SECS else None


def piece_segments(tok, result, duration: float) -> list[tuple[float, float, list[int], list[float]]]:
    """A piece's tokens cut at consecutive timestamp pairs -> (start, end, tokens, logprobs) in the
    piece's seconds. Text before the first timestamp starts at 0; text after the last one ends at
    `duration` (the piece is decoded once, nothing after it picks that text up)."""
    tokens, lps, tb = result.tokens, result.token_logprobs, tok.timestamp_begin
    at = lambda t: min((t - tb) * TIME_PRECISION, duration)
    cuts = [i + 1 for i in range(len(tokens) - 1) if tokens[i] >= tb and tokens[i + 1] >= tb]
    bounds = [0, *cuts, len(tokens)] if tokens else []
    out, end = [], 0.0
    for a, b in zip(bounds, bounds[1:]):
        start = at(tokens[a]) if tokens[a] >= tb else end
        end = at(tokens[b - 1]) if tokens[b - 1] >= tb and b - 1 > a else duration
        out.append((start, end, tokens[a:b], lps[a:b]))
    return out


@dataclass
class _Files:
    """Per-file state of one batched call: languages (None until detected) and what each reports."""

    languages: list
    segments: list
    pieces: list
    fallbacks: list
    skipped: list
    failed: list
    language_probability: list


def transcribe_batched(m, audios: list[np.ndarray], opts, log, progress=None) -> _Files:
    """Every file's pieces decoded `opts.batch_size` at a time -> per-file segments and facts.
    log: a pipeline.WindowLog for the call's timings (the stages are shared by all files)."""
    t0 = time.perf_counter()
    per_file = speech_pieces(m, audios, opts)
    log.timings["vad"] = time.perf_counter() - t0
    n, forced = len(audios), m.reported_language(opts)
    empty = lambda: [[] for _ in range(n)]  # noqa: E731
    files = _Files([forced] * n, empty(), [len(p) for p in per_file], [0] * n, [0] * n, empty(), [None] * n)
    pieces = [p for ps in per_file for p in ps]  # grows by the rests decoding leaves (`undecoded_from`)
    prompt = m.tok.encode(" " + opts.initial_prompt.strip()) if opts.initial_prompt else []
    first = 0
    while first < len(pieces):
        batch = pieces[first : first + opts.batch_size]
        features = _encode(m, [p.audio(audios[p.file]) for p in batch], log)
        t0 = time.perf_counter()
        cross = net.cross_kv(m.params, m.cfg, m.B, features)  # shared by detection and every temperature
        _detect(m, batch, features, cross, files)
        initial = [
            initial_tokens(
                m.tok, m.cfg, prompt, m.tok.sot_sequence(files.languages[p.file], opts.task), opts.without_timestamps
            )
            for p in batch
        ]
        rngs = [np.random.default_rng([opts.seed, p.file, first + j]) for j, p in enumerate(batch)]
        results = decode_batch_with_fallback(m, features, initial, opts, rngs, cross)
        if log.first_token_secs is None:
            log.first_token_secs = time.perf_counter() - log.started
        log.add("decoder", t0)
        t0 = time.perf_counter()
        for j, (piece, result) in enumerate(zip(batch, results)):
            rest = None if _is_silence(result, opts) else undecoded_from(m.tok, result, piece.samples / m.sample_rate)
            _collect(m, piece, result, opts, files, features[j : j + 1] if opts.word_timestamps else None, rest)
            if rest is not None:
                pieces.append(piece.after(round(rest * m.sample_rate)))
                files.pieces[piece.file] += 1
        if opts.word_timestamps:
            log.timings["words"] = log.timings.get("words", 0.0) + time.perf_counter() - t0
        first += len(batch)
        if progress is not None:
            progress(first / len(pieces))
    for segments in files.segments:  # a rest's segments were collected after later pieces'
        segments.sort(key=lambda seg: seg.start)
    for i in range(n):  # a file with no speech still reports a language when it must detect one
        if files.languages[i] is None:
            files.languages[i], files.language_probability[i] = _detect_whole(m, audios[i], log)
    return files


def _encode(m, pieces_audio: list[np.ndarray], log):
    """Pieces' samples -> encoder output (N, n_ctx, d), each piece's log-mel normalised on its own."""
    cfg, t0 = m.cfg, time.perf_counter()
    mels = []
    for audio in pieces_audio:
        feats = WhisperFeatures(audio, cfg.num_mel_bins, cfg.n_audio_frames, m.B)
        mels.append(feats.window(0, min(feats.content_frames, cfg.n_audio_frames)))
    mel = mels[0] if len(mels) == 1 else m.B.concat(mels, axis=0)
    t0 = log.add("features", t0)
    features = net.encode(m.params, cfg, m.B, mel)
    m.B.evaluate(features)
    log.add("encoder", t0)
    return features


def _detect(m, batch, features, cross, files: _Files):
    """The language of each file whose first piece is in this batch, from that piece (one decoder
    step for all of them)."""
    rows = {}  # file -> its first row in the batch
    for j, piece in enumerate(batch):
        if files.languages[piece.file] is None:
            rows.setdefault(piece.file, j)
    if not rows:
        return
    index = list(rows.values())
    picked = features if index == list(range(len(batch))) else m.B.take_rows(features, index)
    found = detect_languages(m, picked, net.take_cross_kv(m.B, cross, index))
    for file, (lang, p) in zip(rows, found):
        files.languages[file], files.language_probability[file] = lang, p


def _detect_whole(m, audio, log):
    cfg, t0 = m.cfg, time.perf_counter()
    feats = WhisperFeatures(audio, cfg.num_mel_bins, cfg.n_audio_frames, m.B)
    af = net.encode(m.params, cfg, m.B, feats.window(0, cfg.n_audio_frames, zero_pad=False))
    found = detect_language(m, af)
    log.add("encoder", t0)
    return found


def _add_words(m, piece: Piece, parts, audio_features, opts, language, segments) -> None:
    """Words for a piece's `segments` (file time, one per `parts` entry): aligned in the piece's own
    time (its window starts at 0), then mapped to the file's time as the segments were, each
    segment then bounded by its words. A piece is decoded once, so the alignment's seek is unused."""
    from polyasr.models.whisper.alignment import MEL_FRAMES_PER_SECOND, WordAligner

    rate = m.sample_rate
    local = [_segment(m.tok, tokens, lps, start, end) for start, end, tokens, lps in parts]
    frames = min(round(piece.samples / rate * MEL_FRAMES_PER_SECOND), m.cfg.n_audio_frames)
    aligner = WordAligner(m, m.tok.sot_sequence(language, opts.task), language)
    aligner.add_words(local, audio_features, [t for _, _, tokens, _ in parts for t in tokens], 0, frames, 0)
    for seg, aligned in zip(segments, local, strict=True):
        seg.words = [
            Word(
                round(piece.file_time(w.start, rate), 2),
                round(piece.file_time(w.end, rate, is_end=True), 2),
                w.text,
                w.probability,
            )
            for w in aligned.words
        ]
        if seg.words:
            seg.start, seg.end = seg.words[0].start, seg.words[-1].end


def _collect(m, piece: Piece, result, opts, files: _Files, audio_features=None, until: float | None = None):
    """A piece's result -> segments in its file's time (none when the model thinks it is silence);
    with `audio_features` (the piece's encoder output), their words too. until: where the piece's
    rest starts (`undecoded_from`): text from there on is the rest's to decode, as the sequential
    loop drops a window's text after the timestamp it seeks to."""
    rate, f = m.sample_rate, piece.file
    files.fallbacks[f] += result.temperature > 0
    if needs_fallback(result, opts):
        files.failed[f].append(round(piece.regions[0][0] / rate, 3))
    if _is_silence(result, opts):
        files.skipped[f] += 1
        return
    parts = piece_segments(m.tok, result, piece.samples / rate)
    if until is not None:
        parts = [part for part in parts if part[0] < until]
    segments = [
        _segment(m.tok, tokens, lps, piece.file_time(start, rate), piece.file_time(end, rate, is_end=True))
        for start, end, tokens, lps in parts
    ]
    if audio_features is not None:
        _add_words(m, piece, parts, audio_features, opts, files.languages[f], segments)
    files.segments[f] += _keep(segments)
