"""GigaAM's pipeline, audio -> ModelOutput.

Long audio is cut by `models.chunking` (attention is quadratic in length); chunks run
`batch_size` at a time through features -> encoder -> log-probs -> argmax on the device; only
the label ids (B, T) and the max frame posteriors (B, T) cross to the host. The frames each
chunk keeps (its kept region) are joined into one stream and `ctc_greedy` collapses it once,
so a word that straddles a cut is joined. Segments are words: split at the vocabulary's space
(characters) or at a SentencePiece piece that starts a word ("▁"); a word spans
[first token frame, last token frame + 1) frames of `cfg.frame_secs` and its confidence is the
mean max posterior over those frames. With word timestamps each segment also carries its word:
from its first token's frame to the last frame its last token fires on (a label repeats over
the frames it lasts), probability the mean over its tokens of their frames' mean posterior.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from polyasr.audio import pad_batch
from polyasr.errors import CheckpointError
from polyasr.models.base import AsrModel, Capabilities, ModelOutput
from polyasr.models.chunking import in_kept_region, iter_chunk_batches
from polyasr.models.ctc_decode import ctc_greedy, token_spans
from polyasr.models.gigaam import model as net
from polyasr.models.gigaam.config import GigaAMConfig
from polyasr.models.gigaam.tokenizer import Vocabulary
from polyasr.models.gigaam.weights import map_weights
from polyasr.models.vad_guided import chunk_plans
from polyasr.result import Segment, Word

CHUNK_SECS = 25.0  # GigaAM was trained on utterances up to about 25-30 s
CHUNK_OVERLAP_SECS = 1.0


@dataclass
class Recognition:
    """One file's greedy CTC result over its stitched frame stream: emitted token ids and their
    frame indices (int32, (N,)), every kept frame's time in seconds and max posterior ((T,)), the
    number of chunks the file was cut into, and every kept frame's argmax label ((T,))."""

    tokens: np.ndarray
    positions: np.ndarray
    times: np.ndarray
    confidence: np.ndarray
    chunks: int
    labels: np.ndarray


class GigaAMModel(AsrModel):
    capabilities = Capabilities(speech_chunks=True, word_timestamps=True)
    languages = ("ru",)

    def description(self) -> str:
        return "Russian"

    def __init__(self, name: str, ckpt, B):
        self.name, self.B, self.format = name, B, ckpt.format
        self.cfg = GigaAMConfig.from_dict(ckpt.cfg)
        if self.cfg.sample_rate != self.sample_rate:
            raise CheckpointError(f"{name}: sample_rate {self.cfg.sample_rate} (polyasr feeds 16 kHz)")
        params, tags, self.buffers = map_weights(ckpt.tensors, ckpt.dtypes, self.cfg, f"{name} ({ckpt.format})")
        self.params = net.prepare({k: B.param(v, tags.get(k)) for k, v in params.items()}, self.cfg, B)
        self.vocab = Vocabulary(self.cfg, ckpt.tokenizer_model)
        self.mel = self.cfg.mel_config()

    def features(self, audios: list[np.ndarray]):
        """Padded batch of 16 kHz float32 signals -> log-mel (B, n_mels, T) on the device, frames (B,)."""
        tables = None if self.buffers is None else (self.buffers.window, self.buffers.filterbank)
        feats, frames = self.B.log_mel(*pad_batch(audios), self.mel, tables)
        return self.B.cast(feats), frames

    @property
    def min_samples(self) -> int:
        """The shortest signal that gives a frame (reflect padding needs more than n_fft // 2 samples)."""
        return self.cfg.n_fft // 2 + 1 if self.cfg.center else self.cfg.n_fft

    def frames(self, audios: list[np.ndarray], timings: dict | None = None):
        """A batch of signals (one padded forward pass) -> per-frame argmax ids (B, T) int64, max
        posteriors (B, T) float32 and valid frames (B,) int64; the argmax and max are taken on the
        device, only (B, T) crosses over. Items shorter than `min_samples` have no valid frames."""
        timings = {} if timings is None else timings
        keep = [i for i, a in enumerate(audios) if len(a) >= self.min_samples]
        ids = np.zeros((len(audios), 0), np.int64)
        conf, lengths = np.zeros((len(audios), 0), np.float32), np.zeros(len(audios), np.int64)
        if not keep:
            return ids, conf, lengths
        t0 = time.perf_counter()
        feats, n_frames = self.features([audios[i] for i in keep])
        self.B.evaluate(feats)
        t1 = time.perf_counter()
        timings["features"] = timings.get("features", 0.0) + t1 - t0
        encoded, encoded_lengths = net.encode(self.params, self.cfg, self.B, feats, n_frames)
        logp = net.log_probs(self.params, self.B, encoded)
        best_ids, best = self.B.argmax(logp), self.B.max(logp)
        self.B.evaluate(best_ids, best)  # MLX: one graph evaluation for both reads
        best_ids, best = self.B.to_numpy(best_ids), self.B.to_numpy(best)
        timings["encoder"] = timings.get("encoder", 0.0) + time.perf_counter() - t1
        ids = np.zeros((len(audios), best_ids.shape[1]), np.int64)
        conf = np.zeros((len(audios), best_ids.shape[1]), np.float32)
        ids[keep], conf[keep], lengths[keep] = best_ids, np.exp(best), encoded_lengths
        return ids, conf, lengths

    def recognize(self, audio: np.ndarray, opts, progress=None, timings: dict | None = None) -> Recognition:
        """One file -> greedy CTC over the frames its chunks keep.

        Attention is quadratic in length, so audio longer than `opts.chunk_secs` (default
        CHUNK_SECS, inside what the model was trained on) is cut at low-energy points with 1 s of
        overlap; chunks run `opts.batch_size` at a time (bounded memory for any length) and each
        frame is kept by the chunk whose kept region holds its start (models/chunking.py):
        stitching frames (not words) lets the one CTC collapse join a word that straddles a cut.
        """
        timings = {} if timings is None else timings
        audio = np.asarray(audio, dtype=np.float32)
        (chunks,) = chunk_plans(self, [audio], opts, opts.chunk_secs or CHUNK_SECS, CHUNK_OVERLAP_SECS, timings)
        hop = round(self.cfg.frame_secs * self.sample_rate)
        stream, done = [], 0
        with self.B.no_grad():
            for batch in iter_chunk_batches(audio, chunks, opts.batch_size):
                ids, conf, lengths = self.frames([a for _, a in batch], timings)
                for (chunk, _), row_ids, row_conf, n in zip(batch, ids, conf, lengths, strict=True):
                    start = chunk.to_file(np.arange(n) * hop)
                    keep = in_kept_region(start, chunk, first=chunk.start == 0, last=chunk.end == len(audio))
                    stream.append((row_ids[:n][keep], start[keep] / self.sample_rate, row_conf[:n][keep]))
                done += len(batch)
                if progress is not None:
                    progress(done / len(chunks))
        t0 = time.perf_counter()
        ids, times, conf = _concat(stream)
        ((tokens, positions),) = ctc_greedy(ids[None], blank=self.cfg.blank_id)
        timings["decoder"] = timings.get("decoder", 0.0) + time.perf_counter() - t0
        return Recognition(tokens, positions, times, conf, len(chunks), ids)

    def words(self, tokens, positions, times, conf, labels=None) -> list[Segment]:
        """Emitted tokens at frame positions of a frame stream with per-frame times and max posteriors
        -> word segments: start/end from the first/last token's frame (40 ms long), confidence =
        mean max posterior over the word's frames. Given the frames' labels, each segment also
        carries its `Word`, bounded by the frames its tokens fire on (and the segment with it)."""
        segs = []
        if labels is not None:
            ends, token_conf = token_spans(labels, positions, conf)
            index = {int(f): k for k, f in enumerate(positions)}  # CTC emits at most one token per frame
        for ids, frames in self.vocab.words(np.asarray(tokens), np.asarray(positions)):
            text = self.vocab.decode(ids).strip()
            if not text:
                continue
            first, last = frames[0], frames[-1]
            seg = Segment(
                start=round(float(times[first]), 3),
                end=round(float(times[last]) + self.cfg.frame_secs, 3),
                text=" " + text,
                confidence=float(conf[first : last + 1].mean()),
                tokens=ids,
            )
            if labels is not None:
                ks = [index[f] for f in frames]
                seg.end = round(float(times[ends[ks[-1]]]) + self.cfg.frame_secs, 3)
                seg.words = [Word(seg.start, seg.end, seg.text, float(token_conf[ks].mean()))]
            segs.append(seg)
        return segs

    def _transcribe(self, audio, opts, progress=None) -> ModelOutput:
        timings = {"features": 0.0, "encoder": 0.0, "decoder": 0.0}
        r = self.recognize(audio, opts, progress, timings)
        t0 = time.perf_counter()
        segments = self.words(r.tokens, r.positions, r.times, r.confidence, r.labels if opts.word_timestamps else None)
        timings["decoder"] += time.perf_counter() - t0
        return ModelOutput(
            segments,
            "ru",
            checkpoint_format=self.format,
            chunks=r.chunks,
            timings=timings,
            extra={"encoder_frames": int(r.times.size)},
        )


def _concat(stream):
    """[(ids, times, conf) per chunk] -> one frame stream (int64 ids, float times, float32 conf)."""
    if not stream:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.float32)
    ids, times, conf = (np.concatenate(parts) for parts in zip(*stream, strict=True))
    return ids.astype(np.int64), times, conf


def load_model(spec, path, B) -> GigaAMModel:
    from polyasr.models.gigaam.checkpoint import check_variant, read_gigaam_checkpoint

    ckpt = read_gigaam_checkpoint(path)
    check_variant(ckpt, spec.id)  # an e2e checkpoint under gigaam-v3-ctc (or the reverse) says so
    return GigaAMModel(spec.id, ckpt, B)
