"""`AsrEngine`: one object per loaded model; the same calls for every model family."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np

from polyasr.audio import SAMPLE_RATE, audio_duration, load_audio, validate_samples
from polyasr.errors import InvalidOptionError, ModelNotFoundError
from polyasr.locate import locate_checkpoint
from polyasr.models.base import ModelOutput
from polyasr.options import TranscribeOptions
from polyasr.registry import ModelType, get_spec, loader_for
from polyasr.result import TranscriptionResult


class AsrEngine:
    """A model loaded on a backend. Build it with `AsrEngine.from_model`."""

    def __init__(self, model, spec, backend, checkpoint: Path, load_secs: float):
        self.model, self.spec, self.backend = model, spec, backend
        self.checkpoint, self.load_secs = checkpoint, load_secs
        self.load_args: dict = {}  # device, dtype, kernels as given: a forced aligner loads with the same
        self._aligners: dict[tuple, AsrEngine] = {}

    @classmethod
    def from_model(
        cls,
        model: str | ModelType = "whisper-base",
        path: str | Path | None = None,
        *,
        device: str = "auto",
        dtype: str | None = None,
        allow_download: bool = False,
        kernels: str | None = None,
        quantize: int | None = None,
        group_size: int = 64,
    ) -> AsrEngine:
        """Load `model` (an id from `polyasr models list`) from `path`, or find it (hub cache, PyPI packages).

        device: "auto" | "cpu" | "cuda" | "mlx"; dtype: "float32" | "float16" | "bfloat16" (default per device);
        kernels: "auto" | "torch" | "triton" (default: $POLYASR_KERNELS, else "auto"; see backends/kernel_dispatch.py);
        quantize: None (full precision, or a quantised checkpoint's own bits), or 8 / 4: linear weights stored in
        that many bits. MLX: `mx.quantize`, one scale and bias per `group_size` (32, 64, 128) input weights;
        torch (CPU / CUDA, `backends/torch_quant.py`): 8 bits with one scale per output channel (int8 GEMM with
        per-token int8 activations on CPUs with VNNI / AMX), 4 bits with one scale and bias per group.
        Layers whose input width is not a multiple of group_size stay in full precision; results report
        `info["quantize"]` ("8bit-g64", "8bit-channel", "4bit-g64") and the two layer counts.
        """
        from polyasr.backends import get_backend

        t0 = time.perf_counter()
        spec = get_spec(model)
        load = loader_for(spec)
        backend = get_backend(device, dtype, kernels, quantize, group_size)  # option errors before any search
        checkpoint = locate_checkpoint(spec, path, allow_download=allow_download)
        stored = _stored_quantization(checkpoint, quantize, group_size)
        if stored is not None:  # a quantised checkpoint: its bits and scheme for every linear layer
            backend = get_backend(device, dtype, kernels, *stored)
        engine = cls(load(spec, checkpoint, backend), spec, backend, checkpoint, time.perf_counter() - t0)
        engine.load_args = {"device": device, "dtype": dtype, "kernels": kernels}
        return engine

    def transcribe(
        self,
        samples,
        options: TranscribeOptions | None = None,
        *,
        sample_rate: int = SAMPLE_RATE,
        name: str | None = None,
        progress=None,
    ) -> TranscriptionResult:
        """Transcribe an array of samples (1-D, or 2-D multichannel; resampled if sample_rate != 16000)."""
        options = options or TranscribeOptions()
        audio = validate_samples(samples, name=name, source_rate=sample_rate)
        return self._run(audio, options, progress, {})

    def transcribe_file(
        self, path: str | Path, options: TranscribeOptions | None = None, progress=None
    ) -> TranscriptionResult:
        """Transcribe an audio file (WAV, FLAC, OGG, MP3; any rate, any channel count)."""
        options = options or TranscribeOptions()
        t0 = time.perf_counter()
        audio = load_audio(path)
        return self._run(audio, options, progress, {"load_audio": time.perf_counter() - t0})

    def transcribe_files(
        self, paths, options: TranscribeOptions | None = None, progress=None
    ) -> list[TranscriptionResult]:
        """Several audio files -> one result per file, in order. Every file is read (and checked)
        before any decoding starts; each result's timings["load_audio"] is the reading of its own file.
        An item may also be samples already decoded at 16 kHz ((N,) float32, as `load_audio` returns);
        its result has no load_audio timing.

        A model that does not batch inputs with these options (`model.batches_inputs(options)`:
        no `capabilities.batched_inputs`, or Whisper with batch_size 1), or a single file, runs the
        files one after another: each result equals `transcribe_file`'s, times included.

        A model that batches across inputs (Qwen3-ASR, Whisper with batch_size > 1: pieces of
        different files share a padded batch, `options.batch_size` at a time) decodes all N files
        in one call, so the decode time of one file does not exist. Every result then reports that
        call: `inference_time_secs` and the stage timings (all but load_audio) are the wall time of
        decoding the N files together, the same in each result; `rtf` is that time over the N
        files' total duration (the batch's real-time factor); `info["batched_files"]` is N. Text,
        segments and language equal
        `transcribe_file`'s.
        """
        audios, reads = [], []
        for item in paths:
            if isinstance(item, np.ndarray):  # decoded ahead by the caller (polyasr batch's reader threads)
                audios.append(validate_samples(item))
                reads.append({})
                continue
            t0 = time.perf_counter()
            audios.append(load_audio(item))
            reads.append({"load_audio": time.perf_counter() - t0})
        return self._run_many(audios, options or TranscribeOptions(), progress, reads)

    def transcribe_many(
        self, audios, options: TranscribeOptions | None = None, progress=None
    ) -> list[TranscriptionResult]:
        """Several arrays of 16 kHz samples (checked as `transcribe` checks them) -> one result each,
        decoded as `transcribe_files` decodes files: together when the model batches across inputs."""
        audios = [validate_samples(a, name=f"input {i}") for i, a in enumerate(audios)]
        return self._run_many(audios, options or TranscribeOptions(), progress, [{} for _ in audios])

    def _run_many(self, audios: list[np.ndarray], options, progress, reads) -> list[TranscriptionResult]:
        if not self.model.batches_inputs(options) or len(audios) < 2:
            return [self._run(a, options, progress, read) for a, read in zip(audios, reads, strict=True)]
        aligner = self.aligner_for(options)  # loaded (and checked) before any decoding
        self._load_embedding(options)  # loaded once, before the timed decoding
        t0 = time.perf_counter()
        outputs = self.model.transcribe_many(audios, self._model_options(aligner, options), progress)
        self.backend.synchronize()
        for audio, output in zip(audios, outputs, strict=True):
            self._align_words(aligner, audio, output, options)
        if options.diarize:
            for audio, output in zip(audios, outputs, strict=True):
                self._diarize(audio, output, options)
        elapsed = time.perf_counter() - t0
        batch_duration = sum(audio_duration(a) for a in audios)
        return [
            self._result(a, out, elapsed, read, batch=(len(audios), batch_duration))
            for a, out, read in zip(audios, outputs, reads, strict=True)
        ]

    def _run(self, audio: np.ndarray, options, progress, timings) -> TranscriptionResult:
        aligner = self.aligner_for(options)  # loaded (and checked) before any decoding
        self._load_embedding(options)  # loaded once, before the timed decoding
        t0 = time.perf_counter()
        output = self.model.transcribe(audio, self._model_options(aligner, options), progress)
        self.backend.synchronize()
        self._align_words(aligner, audio, output, options)
        if options.diarize:
            self._diarize(audio, output, options)
        return self._result(audio, output, time.perf_counter() - t0, timings)

    def align(self, audio, text: str, language: str | None = None, *, sample_rate: int = SAMPLE_RATE):
        """Time a given transcript (a forced aligner's engine: qwen3-forced-aligner-0.6b).

        audio: an audio file's path, or samples (as `transcribe` takes them); text: the transcript,
        one segment per non-empty line; language: ISO code or name (None: split the text at spaces,
        CJK characters one by one). -> a TranscriptionResult whose segments carry their words, in
        seconds of the audio. Empty text, a language the aligner cannot split, audio longer than
        it times, or more words than the audio can hold are an InvalidOptionError.
        """
        if not self.model.capabilities.forced_alignment:
            raise InvalidOptionError(
                f"{self.spec.id} transcribes and does not align a given text; load a forced aligner "
                "(qwen3-forced-aligner-0.6b), or transcribe with --aligner"
            )
        if not isinstance(text, str):
            raise InvalidOptionError(f"the text to align must be a string, got {type(text).__name__}")
        timings = {}
        if isinstance(audio, (str, os.PathLike)):
            t0 = time.perf_counter()
            samples = load_audio(audio)
            timings["load_audio"] = time.perf_counter() - t0
        else:
            samples = validate_samples(audio, source_rate=sample_rate)
        t0 = time.perf_counter()
        output = self.model.align(samples, text, language)
        self.backend.synchronize()
        return self._result(samples, output, time.perf_counter() - t0, timings)

    def _aligner_id(self, options) -> str | None:
        """The forced aligner that times this run's words: the one asked for, or, with word
        timestamps from a model that has none of its own, the one it declares."""
        if options.aligner is not None:
            return options.aligner
        caps = self.model.capabilities
        return caps.aligner if options.word_timestamps and not caps.word_timestamps else None

    def check_options(self, options) -> None:
        """Refuse, before any work, what the model cannot do with these options (InvalidOptionError),
        as it will get them: without its own word timestamps when a forced aligner times the words."""
        model_options = (
            options if self._aligner_id(options) is None else dataclasses.replace(options, word_timestamps=False)
        )
        self.model.check_options(model_options)

    def aligner_for(self, options) -> AsrEngine | None:
        """The forced aligner these options need (None: none), loaded once and kept, and the forced
        language checked against it; a server calls it at start so no request waits for the load."""
        aligner_id = self._aligner_id(options)
        if aligner_id is None:
            return None
        aligner = self._aligner(aligner_id, options.aligner_path)
        aligner.model.check_language(options.language)
        return aligner

    @staticmethod
    def _model_options(aligner, options):
        """With an aligner timing the words, the model transcribes without its own word timestamps."""
        return options if aligner is None else dataclasses.replace(options, word_timestamps=False)

    def _align_words(self, aligner, audio: np.ndarray, output: ModelOutput, options) -> None:
        """Time every segment's words with the forced aligner, within the segment's own audio."""
        if aligner is None:
            return
        t0 = time.perf_counter()
        language = output.language or options.language
        skipped = aligner.model.align_segments(audio, output.segments, language, options.batch_size)
        output.timings["align"] = time.perf_counter() - t0
        output.extra["aligner"] = aligner.spec.id
        if skipped:  # no words, too long, or more words than the stretch holds (a hallucination)
            output.extra["unaligned_segments"] = skipped

    def _aligner(self, aligner_id: str, path) -> AsrEngine:
        """The aligner's engine, loaded once, on this engine's device and dtype."""
        key = (aligner_id, None if path is None else str(path))
        if key not in self._aligners:
            try:
                engine = AsrEngine.from_model(aligner_id, path, **self.load_args)
            except ModelNotFoundError as e:
                raise ModelNotFoundError(
                    f"word timestamps for {self.spec.id} come from the forced aligner {aligner_id}, and no "
                    f"checkpoint of it was found: pass its directory with --aligner-path DIR "
                    f"(TranscribeOptions(aligner_path=...)); {e}"
                ) from e
            if not engine.model.capabilities.forced_alignment:
                raise InvalidOptionError(
                    f"--aligner {aligner_id} is not a forced aligner (try qwen3-forced-aligner-0.6b)"
                )
            self._aligners[key] = engine
        return self._aligners[key]

    def _diarization_device(self, options) -> str:
        """The model's device family: MLX stays MLX; on CUDA an embedding that declares it gains from
        an accelerator (WeSpeaker's convolutions) runs there, the GE2E LSTM on the CPU, whose steps
        are faster than a GPU's for one recording."""
        from polyasr.diarization import encoder_class

        if self.backend.name == "mlx":
            return "mlx"
        on_cuda = str(self.backend.device).startswith("cuda")
        return "cuda" if on_cuda and encoder_class(options.speaker_embedding).prefers_accelerator else "cpu"

    def _load_embedding(self, options) -> None:
        """With diarize, the embedding network loaded (once per process) before the transcription, so
        a missing checkpoint is reported before the model runs, not after."""
        if options.diarize:
            from polyasr.diarization import load_embedding

            opts = options.diarize_options()
            load_embedding(opts.embedding, opts.embedding_path, self._diarization_device(options))

    def _diarize(self, audio: np.ndarray, output: ModelOutput, options) -> None:
        """Label output's segments with speakers (on `_diarization_device`)."""
        from polyasr.diarization import assign_speakers, diarize_signal, split_at_speaker_changes

        t0 = time.perf_counter()
        device = self._diarization_device(options)
        turns = diarize_signal(audio, options.diarize_options(), device=device)
        for segment, speaker in zip(output.segments, assign_speakers(output.segments, turns), strict=True):
            segment.speaker = speaker
            for word, word_speaker in zip(segment.words, assign_speakers(segment.words, turns), strict=True):
                word.speaker = word_speaker or speaker
        output.segments = [part for segment in output.segments for part in split_at_speaker_changes(segment)]
        output.timings["diarize"] = time.perf_counter() - t0

    def _result(
        self, audio: np.ndarray, output: ModelOutput, elapsed: float, timings, batch: tuple[int, float] | None = None
    ) -> TranscriptionResult:
        """batch: (files, their total seconds) when `elapsed` is the time of decoding several files together."""
        duration = audio_duration(audio)
        rtf_duration = duration if batch is None else batch[1]
        text = "".join(s.text for s in output.segments).strip()
        timings = {
            **{k: round(v, 4) for k, v in timings.items()},
            **{k: round(v, 4) for k, v in output.timings.items()},
            "total": round(elapsed, 4),
        }
        return TranscriptionResult(
            text=text,
            segments=output.segments,
            language=output.language,
            model_name=self.spec.id,
            audio_duration_secs=round(duration, 3),
            inference_time_secs=round(elapsed, 4),
            rtf=round(elapsed / rtf_duration, 5) if rtf_duration else 0.0,
            timings=timings,
            info={
                **output.info(),
                **({} if batch is None else {"batched_files": batch[0]}),
                "device": str(self.backend.device),
                "dtype": self.backend.dtype_name,
                "kernels": self.backend.kernels,
                **self._quant_info(),
            },
        )

    def _quant_info(self) -> dict:
        """info["quantize"] ("8bit-g64" or None); with quantisation, how many linear layers it covered."""
        label = self.backend.quantization
        if label is None:
            return {"quantize": None}
        return {
            "quantize": label,
            "quantized_layers": self.backend.quantized_layers,
            "full_precision_layers": self.backend.full_precision_layers,
        }


def _stored_quantization(checkpoint: Path, quantize, group_size) -> tuple[int, int, str] | None:
    """(bits, group size, scheme label) of a quantised checkpoint (`polyasr convert --quantize`), else None; asking
    for other bits than it holds is an error (it cannot be requantised without its fp32 weights)."""
    from polyasr.errors import InvalidOptionError
    from polyasr.models.quantized_checkpoint import read_metadata

    meta = read_metadata(checkpoint)
    if meta is None:
        return None
    stored = (meta["bits"], meta["group_size"], meta.get("scheme"))
    if quantize is not None and (quantize, group_size) != stored[:2]:
        raise InvalidOptionError(
            f"{checkpoint} holds {meta['bits']}-bit weights in groups of {meta['group_size']}; pass --quantize "
            f"{meta['bits']} --group-size {meta['group_size']} or no --quantize (not quantize={quantize}, "
            f"group_size={group_size})"
        )
    return stored
