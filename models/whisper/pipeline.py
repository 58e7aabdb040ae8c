"""Whisper's pipeline, audio -> ModelOutput: 30 s windows, seeking to the last complete timestamp.

Each window is encoded, decoded with temperature fallback, and cut into segments at its
timestamp pairs; the next window starts at the last closed timestamp, so a sentence cut by
the window edge is decoded again whole in the next window rather than split mid-word.
Timestamps are bounded by the window's audio: a last window is padded to 30 s, and what the
model stamps in the padding is not speech, so no segment reaches past the end of the file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from polyasr.errors import CheckpointError
from polyasr.models.base import AsrModel, Capabilities, ModelOutput
from polyasr.models.whisper import model as net
from polyasr.models.whisper.alignment import WordAligner
from polyasr.models.whisper.checkpoint import load_checkpoint
from polyasr.models.whisper.decode import TIME_PRECISION, decode_with_fallback, detect_language, needs_fallback
from polyasr.models.whisper.features import WhisperFeatures
from polyasr.models.whisper.pauses import trim_pauses
from polyasr.models.whisper.tokenizer import WhisperTokenizer
from polyasr.result import Segment


@dataclass
class WindowLog:
    """What happened in the file, for `TranscriptionResult.info` and timings."""

    timings: dict[str, float] = field(default_factory=lambda: {"features": 0.0, "encoder": 0.0, "decoder": 0.0})
    windows: int = 0
    fallbacks: int = 0
    skipped_no_speech: int = 0
    language_probability: float | None = None
    first_token_secs: float | None = None
    failed: list[float] = field(default_factory=list)  # start (s) of each window that failed every temperature
    started: float = field(default_factory=time.perf_counter)

    def add(self, key: str, t0: float) -> float:
        now = time.perf_counter()
        self.timings[key] += now - t0
        return now


def transcribe(m, audio: np.ndarray, opts, progress=None):
    """audio: (N,) float32 at 16 kHz -> (segments, language, WindowLog)."""
    tok, cfg, log = m.tok, m.cfg, WindowLog()
    t0 = start = time.perf_counter()
    feats = WhisperFeatures(audio, cfg.num_mel_bins, cfg.n_audio_frames, m.B)
    t0 = log.add("features", t0)
    language = m.reported_language(opts)  # checked against the tokenizer's languages before any work
    detected = None  # the first window's encoder output and cross K/V, when detection made them
    if language is None:
        af = net.encode(m.params, cfg, m.B, feats.window(0, cfg.n_audio_frames, zero_pad=False))
        m.B.evaluate(af)  # lazy (MLX) and asynchronous (CUDA) backends: the encoder's time is counted here
        cross = net.cross_kv(m.params, cfg, m.B, af)
        language, log.language_probability = detect_language(m, af, cross)
        log.add("encoder", t0)
        if feats.content_frames >= cfg.n_audio_frames:  # a full first window is the mel detection saw
            detected = af, cross
    sot_seq = tok.sot_sequence(language, opts.task)
    all_tokens = tok.encode(" " + opts.initial_prompt.strip()) if opts.initial_prompt else []
    prompt_from, seek, segments = 0, 0, []
    rng = np.random.default_rng(opts.seed)
    aligner = WordAligner(m, sot_seq, language) if opts.word_timestamps else None
    if aligner is not None:
        log.timings["words"] = 0.0
    frames_per_token = cfg.n_audio_frames // cfg.max_source_positions  # 2 mel frames per timestamp step
    while seek < feats.content_frames:
        size = min(cfg.n_audio_frames, feats.content_frames - seek)
        offset = seek * feats.hop / m.sample_rate
        t0 = time.perf_counter()
        cross = None
        if seek == 0 and detected is not None:
            (af, cross), detected = detected, None
        else:
            mel = feats.window(seek, size)
            t0 = log.add("features", t0)
            af = net.encode(m.params, cfg, m.B, mel)
            m.B.evaluate(af)
            t0 = log.add("encoder", t0)
        first_token = None if log.windows else (lambda: setattr(log, "first_token_secs", time.perf_counter() - start))
        result = decode_with_fallback(m, af, all_tokens[prompt_from:], sot_seq, opts, rng, first_token, cross)
        log.add("decoder", t0)
        log.windows += 1
        log.fallbacks += result.temperature > 0
        if needs_fallback(result, opts):  # kept all the same, as the reference keeps it
            log.failed.append(round(offset, 3))
        if _is_silence(result, opts):
            log.skipped_no_speech += 1
            seek += size
        else:
            window_end = (seek + size) * feats.hop / m.sample_rate
            new, advance = _split_segments(tok, result, offset, window_end, size, frames_per_token)
            if aligner is not None:  # words, and the seek to the end of the last one
                t0 = time.perf_counter()
                advance = aligner.add_words(new, af, result.tokens, seek, size, advance)
                log.add("words", t0)
            seek += advance
            segments += new
            all_tokens += [t for s in new for t in s.tokens]
            if not opts.condition_on_previous_text or result.temperature > 0.5:
                prompt_from = len(all_tokens)  # a hot fallback is no prompt to build on
        if progress is not None:
            progress(min(seek, feats.content_frames) / max(feats.content_frames, 1))
    return segments, language, log


def _is_silence(result, opts) -> bool:
    """Skip a window the model thinks is silence, unless its text is confident anyway."""
    if opts.no_speech_threshold is None or result.no_speech_prob <= opts.no_speech_threshold:
        return False
    return not (opts.log_prob_threshold is not None and result.avg_logprob > opts.log_prob_threshold)


def _split_segments(tok, result, offset, window_end, size, frames_per_token):
    """Cut a window's tokens at consecutive timestamp pairs -> (segments, frames to advance).

    A timestamp past `window_end`, the end of the window's audio (a last window's padded tail is
    not speech), is brought back to it, and so is the seek."""
    tokens, lps, tb = result.tokens, result.token_logprobs, tok.timestamp_begin
    at = lambda t: min(offset + (t - tb) * TIME_PRECISION, window_end)
    is_ts = [t >= tb for t in tokens]
    cuts = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
    if not cuts:  # one segment: to the last timestamp, or to the end of the window without one
        stamps = [t for t in tokens if t >= tb]
        end = at(stamps[-1]) if stamps and stamps[-1] != tb else window_end
        return _keep([_segment(tok, tokens, lps, offset, end)]), size
    single_end = is_ts[-2:] == [False, True]
    if single_end:  # nothing is spoken after the last timestamp: the window is done
        cuts.append(len(tokens))
    segments, last = [], 0
    for cut in cuts:
        segments.append(_segment(tok, tokens[last:cut], lps[last:cut], at(tokens[last]), at(tokens[cut - 1])))
        last = cut
    advance = size if single_end else min((tokens[last - 1] - tb) * frames_per_token, size)
    return _keep(segments), advance if advance > 0 else size  # a <|0.00|> pair must not stall the seek


def _segment(tok, tokens, lps, start, end) -> Segment:
    text_lps = [lp for t, lp in zip(tokens, lps) if t < tok.eot] or list(lps) or [0.0]
    return Segment(
        start=round(start, 3),
        end=round(end, 3),
        text=tok.decode(tokens),
        confidence=float(np.exp(np.mean(text_lps))),
        tokens=[int(t) for t in tokens],
    )


def _trim_word_pauses(segments, audio, rate: int, opts, log: WindowLog) -> None:
    """With word timestamps and `trim_word_pauses`, the pauses the alignment gave to words are
    taken out of them (pauses.py); counted in the words' time."""
    if opts.word_timestamps and opts.trim_word_pauses:
        t0 = time.perf_counter()
        trim_pauses(segments, audio, rate)
        log.timings.setdefault("words", 0.0)
        log.add("words", t0)


def _keep(segments):
    """Drop instantaneous or empty segments, as the reference clears them."""
    return [s for s in segments if s.end > s.start and s.text.strip()]


class WhisperModel(AsrModel):
    def __init__(self, name: str, ckpt, B):
        self.name, self.cfg, self.B, self.format = name, ckpt.cfg, B, ckpt.format
        self.tok = WhisperTokenizer(ckpt.tokenizer_file, multilingual=ckpt.cfg.is_multilingual)
        self.params = net.prepare({k: B.param(v, ckpt.dtypes.get(k)) for k, v in ckpt.params.items()}, self.cfg, B)
        multilingual = self.tok.multilingual
        # batched_inputs: with batch_size > 1 the speech pieces of several files share batches
        self.capabilities = Capabilities(
            batched_inputs=True, language_detection=multilingual, translation=multilingual, word_timestamps=True
        )
        # English-only vocabularies keep the language tokens, but the model was trained on English alone.
        self.languages = tuple(self.tok.languages) if multilingual else ("en",)

    def _transcribe(self, audio, opts, progress=None) -> ModelOutput:
        if opts.batch_size > 1:
            return self._transcribe_many([audio], opts, progress)[0]
        with self.B.no_grad():
            segments, language, log = transcribe(self, audio, opts, progress)
        _trim_word_pauses(segments, audio, self.sample_rate, opts, log)
        return ModelOutput(
            segments,
            language,
            checkpoint_format=self.format,
            chunks=log.windows,
            language_probability=log.language_probability,
            first_token_latency_secs=log.first_token_secs,
            timings=dict(log.timings),
            extra={
                "temperature_fallbacks": log.fallbacks,
                "windows_skipped_no_speech": log.skipped_no_speech,
                "windows_failed": log.failed,
            },
        )

    def batches_inputs(self, opts) -> bool:
        return opts.batch_size > 1

    def _transcribe_many(self, audios, opts, progress=None) -> list[ModelOutput]:
        """batch_size 1: one file after another, in 30 s windows. Above: the speech pieces of all
        files, batch_size at a time (`pieces.py`); the timings are those of the whole call."""
        if opts.batch_size == 1:
            return super()._transcribe_many(audios, opts, progress)
        from polyasr.models.whisper.pieces import transcribe_batched

        log = WindowLog()
        log.timings["vad"] = 0.0
        with self.B.no_grad():
            files = transcribe_batched(self, audios, opts, log, progress)
        for segments, audio in zip(files.segments, audios):
            _trim_word_pauses(segments, audio, self.sample_rate, opts, log)
        return [
            ModelOutput(
                files.segments[i],
                files.languages[i],
                checkpoint_format=self.format,
                chunks=files.pieces[i],
                language_probability=files.language_probability[i],
                first_token_latency_secs=log.first_token_secs,
                timings=dict(log.timings),
                extra={
                    "temperature_fallbacks": files.fallbacks[i],
                    "windows_skipped_no_speech": files.skipped[i],
                    "windows_failed": files.failed[i],
                    "speech_pieces": files.pieces[i],
                },
            )
            for i in range(len(audios))
        ]


def load_model(spec, path, B) -> WhisperModel:
    ckpt = load_checkpoint(path)
    check_expected(spec, ckpt.cfg, path)
    return WhisperModel(spec.id, ckpt, B)


def check_expected(spec, cfg, path):
    """A checkpoint whose architecture contradicts the id (base weights for whisper-large-v3) is an error."""
    found = {
        "d_model": cfg.d_model,
        "encoder_layers": cfg.encoder_layers,
        "decoder_layers": cfg.decoder_layers,
        "num_mel_bins": cfg.num_mel_bins,
        "multilingual": cfg.is_multilingual,
    }
    wrong = [f"{k} {found[k]} (expected {v})" for k, v in spec.expect if found[k] != v]
    if wrong:
        raise CheckpointError(
            f"{path} is not a {spec.id} checkpoint: {', '.join(wrong)}; pass the matching "
            "--model id, or --model whisper for any Whisper-architecture checkpoint"
        )
