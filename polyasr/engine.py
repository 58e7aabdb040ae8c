"""`AsrEngine`: one object per loaded model; the same calls for every model family."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from polyasr.audio import SAMPLE_RATE, audio_duration, load_audio, validate_samples
from polyasr.locate import locate_checkpoint
from polyasr.options import TranscribeOptions
from polyasr.registry import ModelType, get_spec, loader_for
from polyasr.result import TranscriptionResult


class AsrEngine:
    """A model loaded on a backend. Build it with `AsrEngine.from_model`."""

    def __init__(self, model, spec, backend, checkpoint: Path, load_secs: float):
        self.model, self.spec, self.backend = model, spec, backend
        self.checkpoint, self.load_secs = checkpoint, load_secs

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
        if stored is not None and quantize is None:  # a quantised checkpoint: its own bits for every linear
            backend = get_backend(device, dtype, kernels, *stored[:2])
        if stored is not None and backend.name == "mlx":
            backend.scheme = "polyasr"  # the layers it quantises on load (a tied output projection) as stored
            backend.quantization = stored[2]
        return cls(load(spec, checkpoint, backend), spec, backend, checkpoint, time.perf_counter() - t0)

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
        """Several audio files -> one result per file, in order, each equal to `transcribe_file`'s.

        Models that decode several inputs together (Qwen3-ASR: pieces of different files share a
        padded batch, `options.batch_size` at a time) get all files at once; the others run the
        files one after another. Every file is read (and checked) before any decoding starts.
        """
        options = options or TranscribeOptions()
        t0 = time.perf_counter()
        audios = [load_audio(p) for p in paths]
        load_secs = (time.perf_counter() - t0) / max(len(audios), 1)
        if not hasattr(self.model, "transcribe_many") or len(audios) < 2:
            return [self._run(a, options, progress, {"load_audio": load_secs}) for a in audios]
        t0 = time.perf_counter()
        outputs = self.model.transcribe_many(audios, options, progress)
        self.backend.synchronize()
        elapsed = (time.perf_counter() - t0) / len(audios)  # the batch's time, shared evenly
        return [
            self._result(a, out, elapsed, {"load_audio": load_secs}) for a, out in zip(audios, outputs, strict=True)
        ]

    def _run(self, audio: np.ndarray, options, progress, timings) -> TranscriptionResult:
        t0 = time.perf_counter()
        output = self.model.transcribe(audio, options, progress)
        self.backend.synchronize()
        return self._result(audio, output, time.perf_counter() - t0, timings)

    def _result(self, audio: np.ndarray, output, elapsed: float, timings) -> TranscriptionResult:
        segments, language, info, model_timings = output
        duration = audio_duration(audio)
        text = "".join(s.text for s in segments).strip()
        timings = {**timings, **{k: round(v, 4) for k, v in model_timings.items()}, "total": round(elapsed, 4)}
        return TranscriptionResult(
            text=text,
            segments=segments,
            language=language,
            model_name=self.spec.id,
            audio_duration_secs=round(duration, 3),
            inference_time_secs=round(elapsed, 4),
            rtf=round(elapsed / duration, 5) if duration else 0.0,
            timings=timings,
            info={
                **info,
                "device": str(self.backend.device),
                "dtype": self.backend.dtype_name,
                "kernels": getattr(self.backend, "kernels", "torch"),
                **self._quant_info(),
            },
        )

    def _quant_info(self) -> dict:
        """info["quantize"] ("8bit-g64" or None); with quantisation, how many linear layers it covered."""
        label = getattr(self.backend, "quantization", None)
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
