"""Parakeet TDT's pipeline, audio -> ModelOutput.

A batch of utterances goes features -> encoder -> the joint's encoder projection on the device;
on the CPU the projection (B, T, J) is handed to the C++ greedy loop as is (no copy), elsewhere
the batched device loop runs (decode.py). Tokens become words at SentencePiece word starts ("▁");
a word spans [frame of its first token, frame of its last token + that token's duration (>= 1))
in 80 ms encoder frames, and its confidence is the mean posterior of its tokens.

Word timestamps follow NeMo's `timestamps=True` for TDT: a token spans [frame, frame + duration)
(a duration may be 0); a punctuation token is moved to the end of the token before it (it is
often emitted late, after a pause); a word runs from its first token's start to its last token's
end. Each segment then carries its word and takes its bounds.

Long audio: full attention is quadratic in length, so audio longer than `chunk_secs` (default
CHUNK_SECS) is cut at low-energy points with CHUNK_OVERLAP_SECS of overlap (models/chunking.py);
chunks run `batch_size` at a time, so memory is bounded for any length, and each word is kept by
the chunk whose kept region holds its start. A chunk sees half the overlap (1 s) beyond its cut,
so a word that straddles the cut is decoded whole by the chunk it starts in.
"""

from __future__ import annotations

import time

import numpy as np

from polyasr.audio import pad_batch
from polyasr.errors import CheckpointError, InvalidOptionError
from polyasr.models.base import AsrModel, Capabilities, ModelOutput
from polyasr.models.chunking import Chunk, keep_emissions
from polyasr.models.parakeet import model as net
from polyasr.models.parakeet.decode import TdtHyp, Transducer
from polyasr.models.parakeet.weights import map_weights
from polyasr.models.vad_guided import chunk_plans
from polyasr.result import Segment, Word

CHUNK_SECS = 120.0
CHUNK_OVERLAP_SECS = 2.0


class ParakeetModel(AsrModel):
    """languages: the ISO codes the checkpoint was trained on (the model id's declaration; the
    checkpoint itself does not list them), None to accept any."""

    capabilities = Capabilities(batched_inputs=True, speech_chunks=True, word_timestamps=True)

    def __init__(self, name: str, ckpt, B, languages: tuple[str, ...] | None = None):
        self.name, self.B, self.format, self.cfg = name, B, ckpt.format, ckpt.cfg
        self.languages = languages
        source = f"{ckpt.source} ({ckpt.format})"
        if self.cfg.sample_rate != self.sample_rate:
            raise CheckpointError(f"{source}: sample_rate {self.cfg.sample_rate} (polyasr feeds 16 kHz)")
        if not self.cfg.durations:
            raise CheckpointError(
                f"{source}: a plain RNN-T checkpoint (no TDT durations); polyasr decodes Parakeet TDT checkpoints"
            )
        params, tags = map_weights(ckpt.tensors, ckpt.dtypes, self.cfg, ckpt.weight_map, source)
        self.transducer = Transducer(params, tags, self.cfg, B)
        encoder = {k: B.param(v, tags.get(k)) for k, v in params.items() if k.startswith(("encoder.", "joint.enc"))}
        self.params = net.prepare(encoder, self.cfg, B)
        self.tokenizer = ckpt.tokenizer
        self.mel = self.cfg.mel_config()

    @property
    def min_samples(self) -> int:
        """The shortest signal that gives a feature frame (NeMo counts len // hop frames)."""
        return self.cfg.hop_length

    def features(self, audios: list[np.ndarray]):
        """Padded batch of 16 kHz float32 signals -> log-mel (B, n_mels, T) on the device, frames (B,)."""
        feats, frames = self.B.log_mel(*pad_batch(audios), self.mel)
        return self.B.cast(feats), frames

    def encode(self, audios: list[np.ndarray], timings: dict | None = None):
        """A batch of utterances -> the joint's encoder projection (B, T', J) on the device, lengths (B,)."""
        timings = {} if timings is None else timings
        t0 = time.perf_counter()
        feats, frames = self.features(audios)
        self.B.evaluate(feats)
        t1 = time.perf_counter()
        encoded, lengths = net.encode(self.params, self.cfg, self.B, feats, frames)
        proj = net.joint_encoder(self.params, self.B, encoded)
        self.B.evaluate(proj)  # lazy (MLX) and asynchronous (CUDA) backends: count the encoder's time here
        timings["features"] = timings.get("features", 0.0) + t1 - t0
        timings["encoder"] = timings.get("encoder", 0.0) + time.perf_counter() - t1
        return proj, lengths

    def decode(self, proj, lengths, timings: dict | None = None, max_symbols: int | None = None) -> list[TdtHyp]:
        """Greedy TDT over an encoder projection: C++ where the backend runs loops best on the host
        (`decode_on_host`: torch on the CPU), the batched device loop elsewhere."""
        t0 = time.perf_counter()
        if self.B.decode_on_host:
            hyps = self.transducer.greedy_host(self.B.to_numpy(proj), lengths, max_symbols)
        else:
            hyps = self.transducer.greedy_device(proj, lengths, max_symbols)
        if timings is not None:
            timings["decoder"] = timings.get("decoder", 0.0) + time.perf_counter() - t0
        return hyps

    def recognize(self, audios: list[np.ndarray], timings: dict | None = None) -> list[TdtHyp]:
        """A batch of utterances -> one greedy TDT result per item (one padded forward pass);
        items shorter than `min_samples` give nothing."""
        out = [TdtHyp(*(np.zeros(0, np.int32),) * 3, np.zeros(0, np.float32)) for _ in audios]
        keep = [i for i, a in enumerate(audios) if len(a) >= self.min_samples]
        if keep:
            proj, lengths = self.encode([audios[i] for i in keep], timings)
            for i, hyp in zip(keep, self.decode(proj, lengths, timings), strict=True):
                out[i] = hyp
        return out

    def token_spans(self, hyp: TdtHyp) -> tuple[np.ndarray, np.ndarray]:
        """Each token's [start, end) in encoder frames, NeMo's TDT offsets: [frame, frame + duration),
        a punctuation token moved to an empty span at the end of the token before it."""
        starts = hyp.frames.astype(np.int64)
        ends = starts + hyp.durations
        punctuation = self.tokenizer.punctuation
        for k in range(1, len(starts)):
            if self.tokenizer.decode([hyp.tokens[k]]) in punctuation:
                starts[k] = ends[k] = ends[k - 1]
        return starts, ends

    def words(self, hyp: TdtHyp, chunk: Chunk | None = None, word_timestamps: bool = False) -> list[Segment]:
        """One utterance's tokens -> word segments, times in seconds of the file `chunk` was taken
        from (`Chunk.to_file`), or of the utterance itself without a chunk; with `word_timestamps`,
        each carries its `Word` and takes NeMo's TDT offsets as its bounds (`token_spans`)."""
        groups, current = [], []
        for i, tok in enumerate(hyp.tokens.tolist()):
            if current and self.tokenizer.starts_word(tok):
                groups.append(current)
                current = []
            current.append(i)
        if current:
            groups.append(current)
        hop = round(self.cfg.frame_secs * self.sample_rate)
        if word_timestamps:
            starts, stops = self.token_spans(hyp)
            firsts = np.array([starts[idx[0]] for idx in groups], dtype=np.int64) * hop
            ends = np.array([stops[idx[-1]] for idx in groups], dtype=np.int64) * hop
        else:
            firsts = np.array([hyp.frames[idx[0]] for idx in groups], dtype=np.int64) * hop
            ends = np.array([hyp.frames[i[-1]] + max(int(hyp.durations[i[-1]]), 1) for i in groups], np.int64) * hop
        if chunk is not None:
            firsts, ends = chunk.to_file(firsts), chunk.to_file(ends, end=True)
        segs = []
        for idx, first, end in zip(groups, firsts.tolist(), ends.tolist()):
            text = self.tokenizer.decode(hyp.tokens[idx]).strip()
            if not text:
                continue
            segs.append(
                Segment(
                    start=round(first / self.sample_rate, 3),
                    end=round(end / self.sample_rate, 3),
                    text=" " + text,
                    confidence=float(np.mean(hyp.confidences[idx])),
                    tokens=[int(t) for t in hyp.tokens[idx]],
                )
            )
            if word_timestamps:
                seg = segs[-1]
                seg.words = [Word(seg.start, seg.end, seg.text, seg.confidence)]
        return segs

    def _transcribe(self, audio, opts, progress=None) -> ModelOutput:
        return self._transcribe_many([audio], opts, progress)[0]

    def _transcribe_many(self, audios: list, opts, progress=None) -> list[ModelOutput]:
        """Several signals, their chunks batched together `opts.batch_size` at a time (one padded
        forward pass each; an item's frames past its length are masked, so it decodes as alone)
        -> one ModelOutput per signal; timings are the whole call's.

        Parakeet detects nothing and cannot be steered: a forced language it supports is reported
        back as the result's language (an English-only checkpoint reports "en") and changes nothing else."""
        if opts.batch_size < 1:
            raise InvalidOptionError(f"batch size must be >= 1, got {opts.batch_size}")
        audios = [np.asarray(a, dtype=np.float32) for a in audios]
        timings = {"features": 0.0, "encoder": 0.0, "decoder": 0.0}
        plans = chunk_plans(self, audios, opts, opts.chunk_secs or CHUNK_SECS, CHUNK_OVERLAP_SECS, timings)
        jobs = [(f, i, chunk) for f, plan in enumerate(plans) for i, chunk in enumerate(plan)]
        segments: list[list[Segment]] = [[] for _ in audios]
        with self.B.no_grad():
            for s in range(0, len(jobs), opts.batch_size):
                batch = jobs[s : s + opts.batch_size]
                hyps = self.recognize([chunk.samples(audios[f]) for f, _, chunk in batch], timings)
                for (f, i, chunk), hyp in zip(batch, hyps, strict=True):
                    words = [(w, w.start) for w in self.words(hyp, chunk, opts.word_timestamps)]
                    kept = keep_emissions(words, chunk, self.sample_rate, first=i == 0, last=i == len(plans[f]) - 1)
                    segments[f] += [w for w, _ in kept]
                if progress is not None:
                    progress(min(s + opts.batch_size, len(jobs)) / len(jobs))
        language = self.reported_language(opts)
        return [
            ModelOutput(segs, language, checkpoint_format=self.format, chunks=len(plan), timings=dict(timings))
            for segs, plan in zip(segments, plans, strict=True)
        ]


def load_model(spec, path, B) -> ParakeetModel:
    from polyasr.models.parakeet.checkpoint import read_parakeet_checkpoint

    return ParakeetModel(spec.id, read_parakeet_checkpoint(path), B, spec.language_codes)
