"""GigaAM as the engine sees it: load a checkpoint onto a backend, transcribe samples.

One utterance (or a padded batch of them) goes features -> encoder -> log-probs -> argmax on
the device; only the label ids (B, T) and the max frame posteriors (B, T) cross to the host,
where `ctc_greedy` collapses them. Long audio is cut by `models.chunking` before it gets here.
Segments are words: split at the vocabulary's space (characters) or at a SentencePiece
piece that starts a word ("▁"); a word spans [first token frame, last token frame + 1) frames
of `cfg.frame_secs` and its confidence is the mean max posterior over those frames.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from polyasr.audio import pad_batch
from polyasr.errors import CheckpointError, InvalidOptionError
from polyasr.models.chunking import iter_chunk_batches, plan_chunks
from polyasr.models.ctc_decode import ctc_greedy
from polyasr.models.gigaam import model as net
from polyasr.models.gigaam.config import GigaAMConfig
from polyasr.models.gigaam.weights import map_weights
from polyasr.result import Segment

_WORD_START = "\u2581"  # SentencePiece's word-boundary mark


class Vocabulary:
    """Token ids -> text: GigaAM's characters, or the e2e models' SentencePiece model."""

    def __init__(self, cfg: GigaAMConfig, tokenizer_model=None):
        self.sp = None
        if tokenizer_model is None and cfg.model_path:
            raise CheckpointError(
                f"GigaAM config names a SentencePiece model ({cfg.model_path}) but no "
                "tokenizer.model (or <checkpoint>_tokenizer.model) was found beside the checkpoint"
            )
        if tokenizer_model is not None:
            import sentencepiece

            self.sp = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer_model))
            size = self.sp.get_piece_size()
        elif cfg.vocabulary:
            size = len(cfg.vocabulary)
        else:
            raise CheckpointError(
                "GigaAM checkpoint has neither a character vocabulary (decoding.vocabulary) "
                "nor a SentencePiece tokenizer.model beside it"
            )
        if size + 1 != cfg.num_classes:
            raise CheckpointError(
                f"GigaAM vocabulary has {size} tokens but the CTC head {cfg.num_classes} classes "
                "(expected tokens + 1 blank)"
            )
        self.chars = cfg.vocabulary

    def piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i)) if self.sp is not None else self.chars[int(i)]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        return self.sp.decode(ids) if self.sp is not None else "".join(self.chars[i] for i in ids)

    def words(self, ids: np.ndarray, frames: np.ndarray) -> list[tuple[list[int], list[int]]]:
        """Group emitted tokens into words -> [(token ids, their frames)]; spaces are dropped."""
        out, cur_ids, cur_frames = [], [], []
        for tok, frame in zip(ids.tolist(), frames.tolist()):
            piece = self.piece(tok)
            boundary = piece == " " or piece.startswith(_WORD_START)
            if boundary and cur_ids:
                out.append((cur_ids, cur_frames))
                cur_ids, cur_frames = [], []
            if piece != " ":
                cur_ids.append(tok)
                cur_frames.append(frame)
        if cur_ids:
            out.append((cur_ids, cur_frames))
        return out


CHUNK_SECS = 25.0  # GigaAM was trained on utterances up to about 25-30 s
CHUNK_OVERLAP_SECS = 1.0


@dataclass
class CtcOutput:
    """One item's greedy CTC result: emitted token ids and their encoder frames (int32, (N,)),
    the max posterior of every valid frame (float32, (T,)), and seconds per frame."""

    token_ids: np.ndarray
    token_frames: np.ndarray
    frame_confidence: np.ndarray
    frame_secs: float


class GigaAMModel:
    sample_rate = 16000

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

    def recognize(self, audios: list[np.ndarray], timings: dict | None = None) -> list[CtcOutput]:
        """A batch of utterances -> greedy CTC output per item (one padded forward pass).

        Items shorter than `min_samples` give no tokens and no frames.
        """
        out = [
            CtcOutput(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32), self.cfg.frame_secs)
            for _ in audios
        ]
        keep = [i for i, a in enumerate(audios) if len(a) >= self.min_samples]
        if keep:
            for i, item in zip(keep, self._recognize([audios[i] for i in keep], timings)):
                out[i] = item
        return out

    def _frames(self, audios: list[np.ndarray], timings: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A padded batch -> per-frame argmax ids (B, T) int64, max posteriors (B, T) float32 and
        valid frames (B,); the argmax and max are taken on the device, only (B, T) crosses over."""
        t0 = time.perf_counter()
        feats, frames = self.features(audios)
        self.B.evaluate(feats)
        t1 = time.perf_counter()
        timings["features"] = timings.get("features", 0.0) + t1 - t0
        encoded, lengths = net.encode(self.params, self.cfg, self.B, feats, frames)
        logp = net.log_probs(self.params, self.B, encoded)
        ids, best = self.B.argmax(logp), self.B.max(logp)
        self.B.evaluate(ids, best)  # MLX: one graph evaluation for both reads
        ids, best = self.B.to_numpy(ids), self.B.to_numpy(best)
        timings["encoder"] = timings.get("encoder", 0.0) + time.perf_counter() - t1
        return ids.astype(np.int64), np.exp(best).astype(np.float32), np.asarray(lengths, dtype=np.int64)

    def _recognize(self, audios: list[np.ndarray], timings: dict | None) -> list[CtcOutput]:
        timings = {} if timings is None else timings
        ids, conf, lengths = self._frames(audios, timings)
        t0 = time.perf_counter()
        out = [
            CtcOutput(tok, fr, conf[i, : lengths[i]], self.cfg.frame_secs)
            for i, (tok, fr) in enumerate(ctc_greedy(ids, lengths, blank=self.cfg.blank_id))
        ]
        timings["decoder"] = timings.get("decoder", 0.0) + time.perf_counter() - t0
        return out

    def segments(self, out: CtcOutput, offset: float = 0.0) -> list[Segment]:
        """Word segments of one item's CTC output; times in seconds from `offset`."""
        times = offset + np.arange(out.frame_confidence.size) * out.frame_secs
        return self._words(out.token_ids, out.token_frames, times, out.frame_confidence)

    def _words(self, tokens, positions, times, conf) -> list[Segment]:
        """Emitted tokens at frame positions of a frame stream with per-frame times and max posteriors
        -> word segments: start/end from the first/last token's frame (40 ms long), confidence =
        mean max posterior over the word's frames."""
        segs = []
        for ids, frames in self.vocab.words(np.asarray(tokens), np.asarray(positions)):
            text = self.vocab.decode(ids).strip()
            if not text:
                continue
            first, last = frames[0], frames[-1]
            segs.append(
                Segment(
                    start=round(float(times[first]), 3),
                    end=round(float(times[last]) + self.cfg.frame_secs, 3),
                    text=" " + text,
                    confidence=float(conf[first : last + 1].mean()),
                    tokens=ids,
                )
            )
        return segs

    def transcribe(self, audio, opts, progress=None):
        """audio (N,) float32 16 kHz -> (segments, "ru", info dict, timings dict).

        Attention is quadratic in length, so audio longer than `opts.chunk_secs` (default
        CHUNK_SECS, inside what the model was trained on) is cut at low-energy points with 1 s of
        overlap; chunks run `opts.batch_size` at a time (bounded memory for any length) and each
        word is kept by the chunk whose kept region holds its start (models/chunking.py).
        """
        if opts.language not in (None, "ru"):
            raise InvalidOptionError(
                f"{self.name} transcribes Russian only; language {opts.language!r} cannot be forced"
            )
        audio = np.asarray(audio, dtype=np.float32)
        chunks = plan_chunks(audio, self.sample_rate, opts.chunk_secs or CHUNK_SECS, overlap_secs=CHUNK_OVERLAP_SECS)
        timings = {"features": 0.0, "encoder": 0.0, "decoder": 0.0}
        stream, done = [], 0
        with self.B.no_grad():
            for batch in iter_chunk_batches(audio, chunks, opts.batch_size):
                long_enough = [(c, a) for c, a in batch if len(a) >= self.min_samples]
                if long_enough:
                    ids, conf, lengths = self._frames([a for _, a in long_enough], timings)
                    stream += [
                        self._kept_frames(c, ids[i, :n], conf[i, :n], len(audio))
                        for i, ((c, _), n) in enumerate(zip(long_enough, lengths, strict=True))
                    ]
                done += len(batch)
                if progress is not None:
                    progress(done / len(chunks))
        t0 = time.perf_counter()
        ids, times, conf = _concat(stream)
        ((tokens, positions),) = ctc_greedy(ids[None], blank=self.cfg.blank_id)
        segments = self._words(tokens, positions, times, conf)
        timings["decoder"] += time.perf_counter() - t0
        info = {"checkpoint_format": self.format, "chunks": len(chunks), "encoder_frames": int(ids.size)}
        return segments, "ru", info, timings

    def _kept_frames(self, chunk, ids, conf, n_samples):
        """The frames of one chunk whose start lies in its kept region, with absolute times: stitching
        frames (not words) lets the one CTC collapse join a word that straddles a cut."""
        hop = round(self.cfg.frame_secs * self.sample_rate)
        start = chunk.start + np.arange(ids.size) * hop
        after_cut = (start >= chunk.keep_start) | (chunk.start == 0)
        before_next = (start < chunk.keep_end) | (chunk.end == n_samples)
        keep = after_cut & before_next
        return ids[keep], start[keep] / self.sample_rate, conf[keep]


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
